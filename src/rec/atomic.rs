//! RecBole atomic files (`.inter`, `.item`, `.user`): a header of `name:type` columns, then one
//! tab-separated row per line. One reader, so every file reports rows and columns the same way.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

/// A whole atomic file, read once; rows are split on demand.
pub struct AtomicFile {
    pub path: PathBuf,
    /// `(name, type)` of each column: `item_id:token` → (`item_id`, `token`); a column without
    /// a type is a `token`.
    pub header: Vec<(String, String)>,
    text: String,
}

impl AtomicFile {
    /// Reads `path`; `what` names its content in the error ("interactions", "items").
    pub fn read(path: &Path, what: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading {what} {}", path.display()))?;
        let header = text
            .lines()
            .next()
            .unwrap_or("")
            .split('\t')
            .map(|c| match c.split_once(':') {
                Some((n, t)) => (n.trim().to_string(), t.trim().to_string()),
                None => (c.trim().to_string(), "token".to_string()),
            })
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            header,
            text,
        })
    }

    /// The first of `names` the header has.
    pub fn find(&self, names: &[&str]) -> Option<usize> {
        names
            .iter()
            .find_map(|n| self.header.iter().position(|(h, _)| h == n))
    }

    /// The column `name`, or an error listing the header and showing `example`, a header of
    /// this kind of file.
    pub fn column(&self, name: &str, example: &str) -> Result<usize> {
        self.find(&[name]).with_context(|| {
            format!(
                "{}: no `{name}` column in the header (found {:?}); hint: a RecBole header reads \
                 `{example}`",
                self.path.display(),
                self.names()
            )
        })
    }

    pub fn names(&self) -> Vec<&str> {
        self.header.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// `(row number, fields)` of every non-blank line after the header (row 2 is the first);
    /// a row whose field count differs from the header's is an error naming it.
    pub fn rows(&self) -> impl Iterator<Item = Result<(usize, Vec<&str>)>> + '_ {
        let width = self.header.len();
        self.text
            .lines()
            .enumerate()
            .skip(1)
            .filter(|(_, line)| !line.trim().is_empty())
            .map(move |(k, line)| {
                let cols: Vec<&str> = line.split('\t').collect();
                ensure!(
                    cols.len() == width,
                    "{} row {}: {} columns, the header has {width}; hint: fields are tab-separated",
                    self.path.display(),
                    k + 1,
                    cols.len()
                );
                Ok((k + 1, cols))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_types_rows_and_a_short_row() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.item");
        std::fs::write(&p, "item_id:token\ttitle\n1\tOne\n\n2\tTwo\n3\n").unwrap();
        let f = AtomicFile::read(&p, "items").unwrap();
        assert_eq!(f.header[0], ("item_id".into(), "token".into()));
        assert_eq!(f.header[1], ("title".into(), "token".into()));
        assert_eq!(f.column("title", "").unwrap(), 1);
        let e = f.column("genre", "item_id:token").unwrap_err().to_string();
        assert!(e.contains("`genre`") && e.contains("item_id:token"), "{e}");
        let rows: Vec<_> = f.rows().collect();
        assert_eq!(rows[0].as_ref().unwrap(), &(2, vec!["1", "One"]));
        assert_eq!(rows[1].as_ref().unwrap(), &(4, vec!["2", "Two"]));
        let e = rows[2].as_ref().unwrap_err().to_string();
        assert!(e.contains("row 5: 1 columns"), "{e}");
    }
}
