//! A checkpoint's integrity record: `manifest.json` lists every file of the checkpoint with its
//! size and SHA-256, written when the checkpoint is, so a resume can tell a damaged checkpoint
//! (a truncated or altered file, a missing one) from an intact one and say which file it is.
//! Files deliberately dropped later (the optimizer state of all but the newest checkpoint under
//! `checkpoint.optimizer_state = "latest"`) are moved from `files` to `dropped`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's file name inside a checkpoint directory.
pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Path relative to the checkpoint (with `/`) → its size and digest.
    pub files: BTreeMap<String, FileRecord>,
    /// Files removed on purpose after the checkpoint was written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    pub bytes: u64,
    pub sha256: String,
}

/// Record every file under `dir` (except the manifest) in `dir/manifest.json`.
pub fn write(dir: &Path) -> Result<()> {
    let mut files = BTreeMap::new();
    for path in list(dir)? {
        let rel = relative(dir, &path);
        if rel != MANIFEST {
            files.insert(rel, record(&path)?);
        }
    }
    let m = Manifest {
        files,
        dropped: vec![],
    };
    let p = dir.join(MANIFEST);
    std::fs::write(&p, serde_json::to_string_pretty(&m)? + "\n")
        .with_context(|| format!("writing {}", p.display()))
}

/// Check `dir` against its manifest: every listed file present with its size and digest. A
/// directory without a manifest (written before manifests existed) passes.
pub fn verify(dir: &Path) -> Result<()> {
    let Some(m) = read(dir)? else {
        return Ok(());
    };
    for (rel, want) in &m.files {
        let p = dir.join(rel);
        let Ok(meta) = std::fs::metadata(&p) else {
            bail!("{rel} is missing");
        };
        if meta.len() != want.bytes {
            bail!(
                "{rel} has {} bytes, {} were written (truncated or overwritten)",
                meta.len(),
                want.bytes
            );
        }
        if sha256(&p)? != want.sha256 {
            bail!("{rel} does not match the SHA-256 recorded when it was written");
        }
    }
    Ok(())
}

/// Whether `dir`'s manifest says `name` was dropped on purpose.
pub fn was_dropped(dir: &Path, name: &str) -> bool {
    read(dir)
        .ok()
        .flatten()
        .is_some_and(|m| m.dropped.iter().any(|d| d == name))
}

/// Remove the files `names` from the checkpoint `dir` and record them as dropped.
pub fn drop_files(dir: &Path, names: &[&str]) -> Result<()> {
    let present: Vec<&&str> = names.iter().filter(|n| dir.join(n).exists()).collect();
    if present.is_empty() {
        return Ok(());
    }
    let mut m = read(dir)?.unwrap_or_default();
    for n in present {
        let p = dir.join(n);
        if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        }
        .with_context(|| format!("removing {}", p.display()))?;
        m.files
            .retain(|k, _| k != *n && !k.starts_with(&format!("{n}/")));
        m.dropped.push(n.to_string());
    }
    let p = dir.join(MANIFEST);
    std::fs::write(&p, serde_json::to_string_pretty(&m)? + "\n")
        .with_context(|| format!("writing {}", p.display()))
}

fn read(dir: &Path) -> Result<Option<Manifest>> {
    let p = dir.join(MANIFEST);
    if !p.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("{MANIFEST} is not valid (damaged)"))
}

fn record(path: &Path) -> Result<FileRecord> {
    Ok(FileRecord {
        bytes: std::fs::metadata(path)?.len(),
        sha256: sha256(path)?,
    })
}

fn sha256(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>())
}

/// Every file under `dir`, recursively, sorted.
fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn relative(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_names_the_damaged_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("model")).unwrap();
        std::fs::write(d.path().join("model/w.bin"), b"0123456789").unwrap();
        std::fs::write(d.path().join("state.json"), b"{}").unwrap();
        write(d.path()).unwrap();
        verify(d.path()).unwrap();
        // Same size, different bytes.
        std::fs::write(d.path().join("model/w.bin"), b"0123456780").unwrap();
        let e = verify(d.path()).unwrap_err().to_string();
        assert!(e.contains("model/w.bin does not match the SHA-256"), "{e}");
        // Truncated.
        std::fs::write(d.path().join("model/w.bin"), b"01234").unwrap();
        let e = verify(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("model/w.bin has 5 bytes, 10 were written"),
            "{e}"
        );
        std::fs::remove_file(d.path().join("model/w.bin")).unwrap();
        let e = verify(d.path()).unwrap_err().to_string();
        assert!(e.contains("model/w.bin is missing"), "{e}");
    }

    #[test]
    fn dropped_files_are_recorded_not_damage() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("optimizer.safetensors"), b"xx").unwrap();
        std::fs::write(d.path().join("state.json"), b"{}").unwrap();
        write(d.path()).unwrap();
        drop_files(d.path(), &["optimizer.safetensors", "absent"]).unwrap();
        assert!(!d.path().join("optimizer.safetensors").exists());
        verify(d.path()).unwrap();
        assert!(was_dropped(d.path(), "optimizer.safetensors"));
        assert!(!was_dropped(d.path(), "state.json"));
        // A directory without a manifest (an older run) passes.
        let old = tempfile::tempdir().unwrap();
        verify(old.path()).unwrap();
    }
}
