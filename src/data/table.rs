//! Dataset files as a recipe names them: a local path (relative to the recipe's directory) or a
//! hub dataset as `hf://datasets/OWNER/NAME[@REVISION]/GLOB` — the URI pandas, polars and
//! `datasets` use — resolved through `hf-hub`'s cache (so it works offline once fetched). Files
//! ending in `.parquet` are read as Parquet, anything else as JSON Lines; either way each row
//! becomes an [`Example`] with every column kept as JSON.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use hf_hub::{api::sync::ApiBuilder, Cache, Repo, RepoType};
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::Value;

use super::jsonl::{open_dataset, read_jsonl};
use super::Example;

const HUB_PREFIX: &str = "hf://datasets/";

/// All rows of the file(s) `spec` names, in file order then row order.
pub fn read_rows(spec: &Path, base_dir: &Path) -> Result<Vec<Example>> {
    let files = match spec.to_str().and_then(|s| s.strip_prefix(HUB_PREFIX)) {
        Some(rest) => {
            let uri = HubUri::parse(rest)?;
            uri.resolve(&Cache::from_env(), !crate::model::hub::offline())?
        }
        None => vec![base_dir.join(spec)],
    };
    let mut rows = Vec::new();
    for f in &files {
        if f.extension().is_some_and(|e| e == "parquet") {
            rows.extend(read_parquet(f)?);
        } else {
            rows.extend(read_jsonl(f)?);
        }
    }
    Ok(rows)
}

/// Rows of a Parquet file, ids `{file name}:{row}` (1-based). Nested columns (lists, structs,
/// maps) become JSON arrays/objects; binary columns base64 strings.
pub fn read_parquet(path: &Path) -> Result<Vec<Example>> {
    let (file, name) = open_dataset(path)?;
    let reader = SerializedFileReader::new(file).with_context(|| {
        format!(
            "{}: not a readable Parquet file; hint: files ending in .parquet are read as \
             Parquet (compression: snappy, gzip or zstd)",
            path.display()
        )
    })?;
    let mut out = Vec::with_capacity(reader.metadata().file_metadata().num_rows().max(0) as usize);
    for (i, row) in reader.into_iter().enumerate() {
        let row = row.with_context(|| format!("{}: reading row {}", path.display(), i + 1))?;
        let Value::Object(fields) = row.to_json_value() else {
            bail!("{}: row {} is not a record", path.display(), i + 1);
        };
        out.push(Example {
            id: format!("{name}:{}", i + 1),
            fields,
        });
    }
    Ok(out)
}

/// `OWNER/NAME[@REVISION]/GLOB`: `*` matches within one path segment, `**` any number of them.
#[derive(Debug, PartialEq)]
struct HubUri {
    repo: String,
    revision: String,
    glob: String,
}

impl HubUri {
    fn parse(rest: &str) -> Result<Self> {
        let hint = "hint: write hf://datasets/OWNER/NAME[@REVISION]/FILES, e.g. \
                    hf://datasets/openai/gsm8k/main/train-*.parquet";
        let mut parts = rest.splitn(3, '/');
        let (Some(owner), Some(name), Some(glob)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("`{HUB_PREFIX}{rest}` names no files inside the dataset; {hint}");
        };
        let (name, revision) = name.split_once('@').unwrap_or((name, "main"));
        if owner.is_empty() || name.is_empty() || glob.is_empty() || revision.is_empty() {
            bail!("`{HUB_PREFIX}{rest}` is not a dataset file URI; {hint}");
        }
        Ok(Self {
            repo: format!("{owner}/{name}"),
            // Branch names with '/' (refs/convert/parquet) are percent-encoded in the URI.
            revision: revision.replace("%2F", "/").replace("%2f", "/"),
            glob: glob.to_string(),
        })
    }

    fn uri(&self) -> String {
        format!("{HUB_PREFIX}{}@{}/{}", self.repo, self.revision, self.glob)
    }

    /// Local paths of the matching files: from the cache when the revision's snapshot there has
    /// them, else listed and downloaded through the hub API (into the same cache).
    fn resolve(&self, cache: &Cache, online: bool) -> Result<Vec<PathBuf>> {
        let repo = Repo::with_revision(self.repo.clone(), RepoType::Dataset, self.revision.clone());
        if let Some(files) = self.cached(cache, &repo) {
            return Ok(files);
        }
        if !online {
            bail!(
                "no file of {} is in the hub cache ({}) and HF_HUB_OFFLINE is set; hint: \
                 fetch it once with network access, or download the files and set this table's \
                 `path` to the local copy (e.g. --set data.path=FILE, or eval_data.path for \
                 [eval_data])",
                self.uri(),
                cache.path().display()
            );
        }
        let api = ApiBuilder::from_cache(cache.clone())
            .with_progress(true)
            .build()
            .context("creating the Hugging Face hub client")?
            .repo(repo);
        let info = api
            .info()
            .map_err(crate::model::hub::once)
            .with_context(|| {
                format!(
                    "listing the files of dataset `{}` on the hub; hint: check the name and your \
                 network, or download the files and set this table's `path` to the local copy \
                 (e.g. --set data.path=FILE, or eval_data.path for [eval_data])",
                    self.repo
                )
            })?;
        let mut names: Vec<String> = info
            .siblings
            .into_iter()
            .map(|s| s.rfilename)
            .filter(|f| glob_match(&self.glob, f))
            .collect();
        names.sort();
        if names.is_empty() {
            bail!(
                "no file of dataset `{}` matches `{}`; hint: Parquet conversions live under \
                 revision `refs/convert/parquet` (e.g. hf://datasets/{}@refs%2Fconvert%2Fparquet/\
                 CONFIG/train/*.parquet) or under data/ in the main branch",
                self.repo,
                self.glob,
                self.repo
            );
        }
        names
            .iter()
            .map(|f| {
                api.get(f)
                    .map_err(crate::model::hub::once)
                    .with_context(|| format!("downloading `{f}` of dataset `{}`", self.repo))
            })
            .collect()
    }

    /// The matching files of the cached snapshot the revision points at, if there are any.
    fn cached(&self, cache: &Cache, repo: &Repo) -> Option<Vec<PathBuf>> {
        let dir = cache.path().join(repo.folder_name());
        let sha = std::fs::read_to_string(dir.join("refs").join(repo.revision()))
            .ok()
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| repo.revision().to_string()); // a commit hash names itself
        let snapshot = dir.join("snapshots").join(sha);
        let mut files = Vec::new();
        walk(&snapshot, &snapshot, &mut |rel, abs| {
            if glob_match(&self.glob, rel) {
                files.push(abs.to_path_buf());
            }
        });
        files.sort();
        (!files.is_empty()).then_some(files)
    }
}

/// Calls `f(relative path with '/', absolute path)` for every file under `dir`.
fn walk(root: &Path, dir: &Path, f: &mut impl FnMut(&str, &Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            walk(root, &path, f);
        } else if let Ok(rel) = path.strip_prefix(root) {
            let rel: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            f(&rel.join("/"), &path);
        }
    }
}

/// Glob over '/'-separated paths: `*` matches within a segment, `**` whole segments (zero or
/// more), `?` one character.
fn glob_match(pattern: &str, path: &str) -> bool {
    fn segs(p: &[&str], s: &[&str]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(&"**"), _) => segs(&p[1..], s) || (!s.is_empty() && segs(p, &s[1..])),
            (Some(pp), Some(ss)) => seg(pp.as_bytes(), ss.as_bytes()) && segs(&p[1..], &s[1..]),
            _ => false,
        }
    }
    fn seg(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => seg(&p[1..], s) || (!s.is_empty() && seg(p, &s[1..])),
            (Some(b'?'), Some(_)) => seg(&p[1..], &s[1..]),
            (Some(a), Some(b)) => a == b && seg(&p[1..], &s[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('/').collect();
    let s: Vec<&str> = path.split('/').collect();
    segs(&p, &s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/data")
            .join(name)
    }

    #[test]
    fn parquet_rows_keep_every_column_as_json() {
        // tests/fixtures/data/make_parquet.py wrote these rows (snappy and zstd).
        for file in ["toy_snappy.parquet", "toy_zstd.parquet"] {
            let rows = read_rows(Path::new(file), &fixture("")).unwrap();
            assert_eq!(rows.len(), 3, "{file}");
            assert_eq!(rows[0].id, format!("{file}:1"));
            assert_eq!(rows[0].text("question").unwrap(), "What is 2 + 3?");
            assert_eq!(rows[0].fields["answer"], Value::String("5".into()));
            assert_eq!(rows[0].fields["nums"], serde_json::json!([2, 3]));
            assert_eq!(rows[0].fields["target"], serde_json::json!(5));
            assert_eq!(rows[1].text("question").unwrap(), "Ünïcode: 7 × 6?");
            assert_eq!(rows[2].fields["answer"], Value::Null);
        }
    }

    #[test]
    fn not_parquet_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.parquet");
        std::fs::write(&p, b"{\"a\": 1}\n").unwrap();
        let err = format!("{:#}", read_parquet(&p).unwrap_err());
        assert!(
            err.contains("not a readable Parquet file") && err.contains("hint"),
            "{err}"
        );
    }

    #[test]
    fn hub_uris_parse_with_revision_and_glob() {
        let u = HubUri::parse("openai/gsm8k/main/train-*.parquet").unwrap();
        assert_eq!(
            u,
            HubUri {
                repo: "openai/gsm8k".into(),
                revision: "main".into(),
                glob: "main/train-*.parquet".into()
            }
        );
        let u = HubUri::parse("acme/toy@v1/**/*.parquet").unwrap();
        assert_eq!((u.repo.as_str(), u.revision.as_str()), ("acme/toy", "v1"));
        let u = HubUri::parse("acme/toy@refs%2Fconvert%2Fparquet/main/train/*.parquet").unwrap();
        assert_eq!(u.revision, "refs/convert/parquet");
        assert_eq!(u.glob, "main/train/*.parquet");
        for bad in ["openai/gsm8k", "openai", "/x/y", "a/b@/c"] {
            let err = format!("{:#}", HubUri::parse(bad).unwrap_err());
            assert!(err.contains("hint"), "{bad}: {err}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match(
            "main/train-*.parquet",
            "main/train-00000-of-00001.parquet"
        ));
        assert!(!glob_match(
            "main/train-*.parquet",
            "main/test-00000-of-00001.parquet"
        ));
        assert!(!glob_match("*.parquet", "main/train.parquet"));
        assert!(glob_match("**/*.parquet", "main/train.parquet"));
        assert!(glob_match("**/*.parquet", "train.parquet"));
        assert!(glob_match("data/tr?in.jsonl", "data/train.jsonl"));
    }

    /// A dataset in an hf-hub cache layout (refs/main → snapshot) resolves without network,
    /// and only the matching files are read.
    #[test]
    fn hub_dataset_resolves_from_the_cache_offline() {
        let cache_dir = tempfile::tempdir().unwrap();
        let repo = cache_dir.path().join("datasets--acme--toy");
        let snap = repo.join("snapshots/0123abcd/main");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
        std::fs::copy(
            fixture("toy_snappy.parquet"),
            snap.join("train-00000-of-00001.parquet"),
        )
        .unwrap();
        std::fs::write(snap.join("test-00000-of-00001.parquet"), b"not read").unwrap();
        let cache = Cache::new(cache_dir.path().to_path_buf());
        let uri = HubUri::parse("acme/toy/main/train-*.parquet").unwrap();
        let files = uri.resolve(&cache, false).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(read_parquet(&files[0]).unwrap().len(), 3);
        // Not cached and offline: one clear error, no network attempt.
        let missing = HubUri::parse("acme/other/*.parquet").unwrap();
        let err = format!("{:#}", missing.resolve(&cache, false).unwrap_err());
        assert!(
            err.contains("HF_HUB_OFFLINE") && err.contains("hint"),
            "{err}"
        );
    }
}
