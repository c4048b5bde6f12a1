//! Item vectors the user supplies, as one row-major f32 matrix with an item id per row:
//!
//! - `.npy` (NumPy's format, versions 1–3): a 2-D, C-order array of `<f4` or `<f8`; ids from a
//!   file with one id per line (`--ids`) or the row numbers;
//! - `.safetensors`: tensor `embeddings` (or the one named) of f32/f64/f16/bf16 `[n, dim]`, ids
//!   from the `__metadata__` key `item_ids` (a JSON array of strings, as `llmrl rec embed` writes)
//!   or the row numbers;
//! - `.jsonl`: one `{"item_id": ..., "embedding": [...]}` per line (a string or number id).
//!
//! Every error names the file and, where one is at fault, the row or line.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use safetensors::{Dtype, SafeTensors};

/// `n` vectors of `dim` floats, row-major, and the item id of each row.
#[derive(Clone, Debug, PartialEq)]
pub struct Vectors {
    pub ids: Vec<String>,
    pub dim: usize,
    /// `[n, dim]` row-major.
    pub data: Vec<f32>,
}

/// Where the vectors come from and how to name their rows.
#[derive(Clone, Debug, Default)]
pub struct VectorSource {
    pub path: PathBuf,
    /// safetensors: the tensor to read (default `embeddings`).
    pub tensor: Option<String>,
    /// One item id per line, row order (for `.npy` and safetensors without `item_ids`).
    pub ids: Option<PathBuf>,
}

impl Vectors {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Reads the vectors by the file's extension; checks shape, ids (unique, one per row) and
    /// that every value is finite.
    pub fn read(src: &VectorSource) -> Result<Self> {
        let p = &src.path;
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        let (mut ids, dim, data) = match ext {
            "npy" => {
                let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                let (n, dim, data) =
                    parse_npy(&bytes).with_context(|| format!("{}: not a usable .npy", p.display()))?;
                (row_ids(n), dim, data)
            }
            "safetensors" => read_safetensors(p, src.tensor.as_deref())?,
            "jsonl" => read_jsonl(p)?,
            _ => bail!(
                "{}: unknown embeddings format `.{ext}`; hint: give a .npy, .safetensors or .jsonl file",
                p.display()
            ),
        };
        if let Some(idf) = &src.ids {
            ensure!(
                ext != "jsonl",
                "--ids is for .npy / .safetensors; {} names its items itself",
                p.display()
            );
            ids = read_ids(idf, ids.len())?;
        }
        let v = Vectors { ids, dim, data };
        v.check(p)?;
        Ok(v)
    }

    fn check(&self, p: &Path) -> Result<()> {
        ensure!(!self.is_empty(), "{}: no vectors", p.display());
        ensure!(self.dim > 0, "{}: vectors of dimension 0", p.display());
        ensure!(
            self.data.len() == self.ids.len() * self.dim,
            "{}: {} values for {} rows of {}",
            p.display(),
            self.data.len(),
            self.ids.len(),
            self.dim
        );
        if let Some(i) = self.data.iter().position(|x| !x.is_finite()) {
            bail!(
                "{}: row {} (item `{}`) holds a non-finite value",
                p.display(),
                i / self.dim,
                self.ids[i / self.dim]
            );
        }
        let mut seen = HashSet::with_capacity(self.ids.len());
        for (r, id) in self.ids.iter().enumerate() {
            ensure!(
                seen.insert(id.as_str()),
                "{}: item `{id}` appears twice (again at row {r})",
                p.display()
            );
        }
        Ok(())
    }
}

fn row_ids(n: usize) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

/// One id per line (trimmed); blank lines are an error (they would shift every later row).
fn read_ids(path: &Path, rows: usize) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading item ids {}", path.display()))?;
    let ids: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    if let Some(i) = ids.iter().position(String::is_empty) {
        bail!(
            "{}: line {} is blank; hint: one item id per line, in row order",
            path.display(),
            i + 1
        );
    }
    ensure!(
        ids.len() == rows,
        "{}: {} item ids for {rows} vector rows; hint: one id per line, in row order",
        path.display(),
        ids.len()
    );
    Ok(ids)
}

/// NumPy's `.npy` bytes → (rows, dim, data). Only what item embeddings need: 2-D, C order,
/// little-endian f32 or f64.
pub fn parse_npy(bytes: &[u8]) -> Result<(usize, usize, Vec<f32>)> {
    ensure!(
        bytes.len() >= 10 && &bytes[..6] == b"\x93NUMPY",
        "missing the \\x93NUMPY magic"
    );
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            ensure!(bytes.len() >= 12, "truncated header");
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => bail!("unsupported .npy version {v}"),
    };
    let header = bytes
        .get(start..start + header_len)
        .context("truncated header")?;
    let header = std::str::from_utf8(header).context("header is not text")?;
    let descr = dict_value(header, "descr").context("header has no 'descr'")?;
    let descr = quoted(descr).context("'descr' is not a quoted string")?;
    let fortran = dict_value(header, "fortran_order").context("header has no 'fortran_order'")?;
    ensure!(
        fortran.starts_with("False"),
        "the array is in Fortran order; hint: save np.ascontiguousarray(x)"
    );
    let shape = dict_value(header, "shape").context("header has no 'shape'")?;
    let shape = shape
        .trim_start_matches('(')
        .split(')')
        .next()
        .unwrap_or("");
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("bad shape ({shape})"))?;
    ensure!(
        dims.len() == 2,
        "the array has shape ({shape}); expected 2-D [items, dim]"
    );
    let (n, dim) = (dims[0], dims[1]);
    let body = &bytes[start + header_len..];
    let width = match descr {
        "<f4" => 4,
        "<f8" => 8,
        d => bail!("dtype `{d}` is not supported; hint: save float32 or float64 (x.astype('<f4'))"),
    };
    let want = n * dim * width;
    ensure!(
        body.len() == want,
        "shape [{n}, {dim}] of `{descr}` needs {want} data bytes, the file has {}",
        body.len()
    );
    let data = if width == 4 {
        body.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        body.chunks_exact(8)
            .map(|b| {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                f64::from_le_bytes(a) as f32
            })
            .collect()
    };
    Ok((n, dim, data))
}

/// The text after `'key':` in a Python dict literal, up to the end of the header.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let i = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[i + key.len() + 2..];
    Some(rest.trim_start().strip_prefix(':')?.trim_start())
}

/// The string literal at the start of `s` (`'<f4', ...` → `<f4`).
fn quoted(s: &str) -> Option<&str> {
    let q = s.chars().next().filter(|&c| c == '\'' || c == '"')?;
    let body = &s[1..];
    Some(&body[..body.find(q)?])
}

type Rows = (Vec<String>, usize, Vec<f32>);

fn read_safetensors(path: &Path, tensor: Option<&str>) -> Result<Rows> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let name = tensor.unwrap_or("embeddings");
    let t = st.tensor(name).map_err(|_| {
        let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
        names.sort();
        anyhow::anyhow!(
            "{}: no tensor `{name}`; it holds {}; hint: pick one with --tensor NAME",
            path.display(),
            names.join(", ")
        )
    })?;
    let shape = t.shape();
    ensure!(
        shape.len() == 2,
        "{}: tensor `{name}` has shape {shape:?}; expected 2-D [items, dim]",
        path.display()
    );
    let raw = t.data();
    let data: Vec<f32> = match t.dtype() {
        Dtype::F32 => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => raw
            .chunks_exact(8)
            .map(|b| {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                f64::from_le_bytes(a) as f32
            })
            .collect(),
        Dtype::F16 => raw
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => raw
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        d => bail!(
            "{}: tensor `{name}` has dtype {d:?}; expected a float tensor",
            path.display()
        ),
    };
    let (n, dim) = (shape[0], shape[1]);
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("{}: unreadable header", path.display()))?;
    let ids = match meta.metadata().as_ref().and_then(|m| m.get("item_ids")) {
        Some(text) => {
            let ids: Vec<String> = serde_json::from_str(text).with_context(|| {
                format!(
                    "{}: metadata `item_ids` should be a JSON array of strings",
                    path.display()
                )
            })?;
            ensure!(
                ids.len() == n,
                "{}: metadata `item_ids` names {} items for {n} rows of `{name}`",
                path.display(),
                ids.len()
            );
            ids
        }
        None => row_ids(n),
    };
    Ok((ids, dim, data))
}

fn read_jsonl(path: &Path) -> Result<Rows> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line {
        item_id: serde_json::Value,
        embedding: Vec<f64>,
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (mut ids, mut data, mut dim) = (Vec::new(), Vec::new(), 0usize);
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {}", path.display(), i + 1);
        let row: Line = serde_json::from_str(line).with_context(|| {
            format!(
                "{}: expected {{\"item_id\": \"...\", \"embedding\": [floats]}}",
                at()
            )
        })?;
        let id = match row.item_id {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            v => bail!("{}: item_id {v} should be a string or a number", at()),
        };
        if ids.is_empty() {
            dim = row.embedding.len();
        }
        ensure!(
            row.embedding.len() == dim,
            "{}: item `{id}` has {} values, the first line has {dim}",
            at(),
            row.embedding.len()
        );
        ids.push(id);
        data.extend(row.embedding.iter().map(|&x| x as f32));
    }
    Ok((ids, dim, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-1 `.npy` of `rows` in `descr` (`<f4` or `<f8`), as `np.save` writes it.
    fn npy(descr: &str, fortran: bool, shape: &str, values: &[f64]) -> Vec<u8> {
        let mut header = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend((header.len() as u16).to_le_bytes());
        b.extend(header.as_bytes());
        for &v in values {
            if descr == "<f4" {
                b.extend((v as f32).to_le_bytes());
            } else {
                b.extend(v.to_le_bytes());
            }
        }
        b
    }

    fn src(path: PathBuf) -> VectorSource {
        VectorSource {
            path,
            ..VectorSource::default()
        }
    }

    #[test]
    fn npy_f32_f64_with_and_without_ids() {
        let dir = tempfile::tempdir().unwrap();
        let vals = [1.0, 2.0, 3.0, 4.0, 5.0, 6.5];
        for d in ["<f4", "<f8"] {
            let p = dir.path().join(format!("x{}.npy", &d[2..]));
            std::fs::write(&p, npy(d, false, "(3, 2)", &vals)).unwrap();
            let v = Vectors::read(&src(p.clone())).unwrap();
            assert_eq!((v.len(), v.dim), (3, 2));
            assert_eq!(v.row(2), &[5.0, 6.5]);
            assert_eq!(v.ids, vec!["0", "1", "2"]);
            let ids = dir.path().join("ids.txt");
            std::fs::write(&ids, "a\nb\nc\n").unwrap();
            let v = Vectors::read(&VectorSource {
                ids: Some(ids),
                ..src(p)
            })
            .unwrap();
            assert_eq!(v.ids, vec!["a", "b", "c"]);
        }
    }

    #[test]
    fn npy_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.npy");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (npy("<f4", true, "(1, 2)", &[1.0, 2.0]), "Fortran"),
            (npy("<f4", false, "(2,)", &[1.0, 2.0]), "2-D"),
            (npy("<i8", false, "(1, 1)", &[1.0]), "not supported"),
            (npy("<f4", false, "(2, 2)", &[1.0, 2.0]), "data bytes"),
            (b"PK\x03\x04 not numpy".to_vec(), "magic"),
            (npy("<f4", false, "(1, 2)", &[1.0, f64::NAN]), "row 0"),
        ];
        for (bytes, want) in cases {
            std::fs::write(&p, bytes).unwrap();
            let e = format!("{:#}", Vectors::read(&src(p.clone())).unwrap_err());
            assert!(e.contains(want) && e.contains("bad.npy"), "{want}: {e}");
        }
        std::fs::write(&p, npy("<f4", false, "(2, 1)", &[1.0, 2.0])).unwrap();
        let ids = dir.path().join("ids.txt");
        std::fs::write(&ids, "a\n").unwrap();
        let e = Vectors::read(&VectorSource {
            ids: Some(ids.clone()),
            ..src(p.clone())
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("1 item ids for 2"), "{e:#}");
        std::fs::write(&ids, "a\na\n").unwrap();
        let e = Vectors::read(&VectorSource {
            ids: Some(ids),
            ..src(p)
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("`a` appears twice"), "{e:#}");
    }

    fn write_st(
        p: &Path,
        name: &str,
        ids: Option<&str>,
        dtype: Dtype,
        bytes: &[u8],
        shape: &[usize],
    ) {
        let view = safetensors::tensor::TensorView::new(dtype, shape.to_vec(), bytes).unwrap();
        let meta =
            ids.map(|s| std::collections::HashMap::from([("item_ids".to_string(), s.to_string())]));
        safetensors::serialize_to_file([(name, view)], meta, p).unwrap();
    }

    #[test]
    fn safetensors_with_ids_and_named_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.safetensors");
        let vals: Vec<u8> = [1f32, 2., 3., 4.]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        write_st(
            &p,
            "embeddings",
            Some(r#"["x","y"]"#),
            Dtype::F32,
            &vals,
            &[2, 2],
        );
        let v = Vectors::read(&src(p.clone())).unwrap();
        assert_eq!(v.ids, vec!["x", "y"]);
        assert_eq!(v.row(1), &[3.0, 4.0]);
        // Another tensor name, no ids: rows are numbered; a missing name lists what is there.
        let vals: Vec<u8> = [1f64, 2.].iter().flat_map(|x| x.to_le_bytes()).collect();
        write_st(&p, "emb", None, Dtype::F64, &vals, &[1, 2]);
        let e = format!("{:#}", Vectors::read(&src(p.clone())).unwrap_err());
        assert!(
            e.contains("no tensor `embeddings`") && e.contains("emb") && e.contains("--tensor"),
            "{e}"
        );
        let v = Vectors::read(&VectorSource {
            tensor: Some("emb".into()),
            ..src(p.clone())
        })
        .unwrap();
        assert_eq!(
            (v.ids.clone(), v.data.clone()),
            (vec!["0".to_string()], vec![1.0, 2.0])
        );
        // Ids that do not match the rows.
        let vals: Vec<u8> = [1f32, 2.].iter().flat_map(|x| x.to_le_bytes()).collect();
        write_st(
            &p,
            "embeddings",
            Some(r#"["x","y"]"#),
            Dtype::F32,
            &vals,
            &[1, 2],
        );
        let e = format!("{:#}", Vectors::read(&src(p)).unwrap_err());
        assert!(e.contains("names 2 items for 1 rows"), "{e}");
    }

    #[test]
    fn jsonl_rows_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.jsonl");
        std::fs::write(
            &p,
            "{\"item_id\": \"a\", \"embedding\": [1, 2]}\n\n{\"item_id\": 7, \"embedding\": [3.5, 4]}\n",
        )
        .unwrap();
        let v = Vectors::read(&src(p.clone())).unwrap();
        assert_eq!(v.ids, vec!["a", "7"]);
        assert_eq!(v.data, vec![1.0, 2.0, 3.5, 4.0]);
        std::fs::write(&p, "{\"item_id\": \"a\", \"embedding\": [1, 2]}\n{\"item_id\": \"b\", \"embedding\": [1]}\n").unwrap();
        let e = format!("{:#}", Vectors::read(&src(p.clone())).unwrap_err());
        assert!(
            e.contains("line 2") && e.contains("`b` has 1 values"),
            "{e}"
        );
        std::fs::write(&p, "{\"id\": \"a\", \"embedding\": [1, 2]}\n").unwrap();
        let e = format!("{:#}", Vectors::read(&src(p.clone())).unwrap_err());
        assert!(e.contains("e.jsonl line 1"), "{e}");
        let q = dir.path().join("e.csv");
        std::fs::write(&q, "1,2\n").unwrap();
        let e = format!("{:#}", Vectors::read(&src(q)).unwrap_err());
        assert!(e.contains(".npy, .safetensors or .jsonl"), "{e}");
    }
}
