//! JSON Lines datasets: one JSON object per line becomes one [`Example`], every field kept.
//!
//! `fields = { question = "problem" }` maps canonical names (what templates and verifiers read)
//! to the file's own names; the canonical field is added beside the original, which stays, so a
//! template may use either. SFT rows (`prompt`/`completion` or `messages`) are kept as they are.
//! Errors point at `file:line` and say how to fix the row or the recipe.
//!
//! The same table (path + fields) serves Parquet and hub files through [`super::table`].
//! Not here: streaming of files larger than memory.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Example;

/// `{ source = "jsonl" | "parquet", path = "...", fields = { canonical = "source_field" } }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlConfig {
    /// Relative paths are resolved against the recipe's directory.
    pub path: PathBuf,
    /// Canonical field name → field name in the file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

impl JsonlConfig {
    pub fn load(&self, base_dir: &Path) -> Result<Vec<Example>> {
        super::table::read_rows(&self.path, base_dir)?
            .into_iter()
            .map(|mut ex| {
                for (canonical, source) in &self.fields {
                    let Some(value) = ex.fields.get(source).cloned() else {
                        bail!(
                            "{}: field `{source}` (mapped to `{canonical}`) is missing; available \
                             fields: {}; hint: fix `fields` in the recipe's [data] table",
                            ex.id,
                            field_list(&ex.fields)
                        );
                    };
                    ex.fields.insert(canonical.clone(), value);
                }
                Ok(ex)
            })
            .collect()
    }
}

/// The comma-separated field names of a row, for error messages.
pub(crate) fn field_list(fields: &Map<String, Value>) -> String {
    if fields.is_empty() {
        return "(none)".into();
    }
    fields
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Open a dataset file; also returns the file name that prefixes its row ids.
pub(crate) fn open_dataset(path: &Path) -> Result<(File, String)> {
    let file = File::open(path).with_context(|| {
        format!(
            "opening dataset {}; hint: check `path` in the recipe's [data] table (relative \
             paths are resolved against the recipe's directory)",
            path.display()
        )
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    Ok((file, name))
}

/// Read a JSON Lines file into examples with ids `{file name}:{line}` (1-based). Blank lines
/// are skipped; a line that is not a JSON object is an error naming the line.
pub fn read_jsonl(path: &Path) -> Result<Vec<Example>> {
    let (file, name) = open_dataset(path)?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let lineno = i + 1;
        let line = line.with_context(|| format!("reading {}:{lineno}", path.display()))?;
        // A UTF-8 byte-order mark (Windows editors) is not part of the JSON.
        let line = if i == 0 {
            line.trim_start_matches('\u{feff}')
        } else {
            &line
        };
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).with_context(|| {
            format!(
                "{}:{lineno}: invalid JSON; hint: a JSONL file has exactly one JSON object per \
                 line (a pretty-printed .json file or a JSON array is not JSONL)",
                path.display()
            )
        })?;
        let Value::Object(fields) = value else {
            bail!(
                "{}:{lineno}: expected a JSON object, found {}; hint: each line must be an \
                 object such as {{\"question\": \"...\", \"answer\": \"...\"}}",
                path.display(),
                kind(&value)
            );
        };
        out.push(Example {
            id: format!("{name}:{lineno}"),
            fields,
        });
    }
    Ok(out)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(content: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new()
            .suffix(".jsonl")
            .tempfile()
            .unwrap();
        f.write_all(content.as_bytes()).unwrap();
        f
    }

    #[test]
    fn reads_rows_skips_blank_lines_and_numbers_ids_by_line() {
        let f = file("\u{feff}{\"a\": 1}\n\n{\"a\": [2, 3], \"b\": \"x\"}\r\n");
        let rows = read_jsonl(f.path()).unwrap();
        assert_eq!(rows.len(), 2);
        let name = f.path().file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(rows[0].id, format!("{name}:1"));
        assert_eq!(rows[1].id, format!("{name}:3"));
        assert_eq!(rows[1].text("a").unwrap(), "[2,3]");
        assert_eq!(rows[1].text("b").unwrap(), "x");
    }

    #[test]
    fn bad_json_names_the_line_with_a_hint() {
        let f = file("{\"a\": 1}\n{\"a\": \n");
        let err = format!("{:#}", read_jsonl(f.path()).unwrap_err());
        assert!(err.contains(":2: invalid JSON"), "{err}");
        assert!(err.contains("hint"), "{err}");
        let f = file("[1, 2]\n");
        let err = format!("{:#}", read_jsonl(f.path()).unwrap_err());
        assert!(
            err.contains(":1: expected a JSON object, found an array"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_has_a_hint() {
        let err = format!(
            "{:#}",
            read_jsonl(Path::new("/nonexistent/x.jsonl")).unwrap_err()
        );
        assert!(
            err.contains("/nonexistent/x.jsonl") && err.contains("hint"),
            "{err}"
        );
    }

    #[test]
    fn field_mapping_adds_canonical_names_and_keeps_originals() {
        let f = file("{\"problem\": \"1+1?\", \"solution\": \"2\", \"extra\": true}\n");
        let cfg = JsonlConfig {
            path: f.path().file_name().unwrap().into(),
            fields: [("question", "problem"), ("answer", "solution")]
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        };
        // The relative path is resolved against base_dir.
        let rows = cfg.load(f.path().parent().unwrap()).unwrap();
        assert_eq!(rows[0].text("question").unwrap(), "1+1?");
        assert_eq!(rows[0].text("answer").unwrap(), "2");
        assert_eq!(rows[0].text("problem").unwrap(), "1+1?");
        assert_eq!(rows[0].fields["extra"], Value::Bool(true));
    }

    #[test]
    fn missing_mapped_field_lists_available_fields() {
        let f = file("{\"problem\": \"p\", \"sol\": \"2\"}\n");
        let cfg = JsonlConfig {
            path: f.path().to_path_buf(),
            fields: [("answer".to_string(), "solution".to_string())].into(),
        };
        let err = format!("{:#}", cfg.load(Path::new("/")).unwrap_err());
        assert!(
            err.contains("field `solution` (mapped to `answer`) is missing"),
            "{err}"
        );
        assert!(err.contains("available fields: problem, sol"), "{err}");
    }
}
