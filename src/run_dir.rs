//! The run directory: resolved recipe, run metadata (git commit, seed), `metrics.jsonl` (a line per
//! step), `rollouts/step_N.jsonl`, `eval.jsonl`, and `checkpoints/step_N/` written atomically
//! (temp dir + rename), keeping the last K.
//!
//! Never overwrites what a user wrote: a new run refuses an existing non-empty directory.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    /// A fresh run directory; refuses one that exists and is not empty.
    pub fn create(root: &Path) -> Result<Self> {
        if root.exists() && std::fs::read_dir(root)?.next().is_some() {
            bail!(
                "run directory {} already exists and is not empty; pick another --out, or continue it \
                 with `llmrl train --resume {}`",
                root.display(),
                root.display()
            );
        }
        std::fs::create_dir_all(root.join("checkpoints"))
            .with_context(|| format!("creating {}", root.display()))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// An existing run, for `--resume`.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.join("recipe.resolved.toml").is_file() {
            bail!(
                "{} is not an llmrl run directory (no recipe.resolved.toml)",
                root.display()
            );
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn write_text(&self, name: &str, text: &str) -> Result<()> {
        let p = self.path(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    }

    /// Append one JSON line to `name` (metrics.jsonl, eval.jsonl), flushed at once.
    pub fn append_jsonl(&self, name: &str, v: &Value) -> Result<()> {
        let p = self.path(name);
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .with_context(|| format!("opening {}", p.display()))?;
        writeln!(f, "{v}")?;
        f.flush()?;
        Ok(())
    }

    /// Drop lines with `step` > `step` (work after the checkpoint a run resumes from).
    pub fn truncate_jsonl_after(&self, name: &str, step: u64) -> Result<()> {
        let p = self.path(name);
        if !p.exists() {
            return Ok(());
        }
        let kept: Vec<String> = BufReader::new(File::open(&p)?)
            .lines()
            .map_while(|l| l.ok())
            .filter(|l| {
                serde_json::from_str::<Value>(l)
                    .ok()
                    .and_then(|v| v.get("step").and_then(Value::as_u64))
                    .is_some_and(|s| s <= step)
            })
            .collect();
        let tmp = p.with_extension("jsonl.tmp");
        std::fs::write(
            &tmp,
            kept.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )?;
        std::fs::rename(&tmp, &p)?;
        Ok(())
    }

    /// The directory of the recipe the run was started from (`run.json`'s `recipe_dir`): what
    /// the resolved recipe's relative paths are relative to.
    pub fn recipe_dir(&self) -> Result<PathBuf> {
        let meta: Value = serde_json::from_str(&std::fs::read_to_string(self.path("run.json"))?)
            .context("reading run.json")?;
        Ok(PathBuf::from(
            meta["recipe_dir"]
                .as_str()
                .context("run.json has no recipe_dir")?,
        ))
    }

    pub fn checkpoint_dir(&self, step: u64) -> PathBuf {
        self.root
            .join("checkpoints")
            .join(format!("step_{step:06}"))
    }

    /// Write a checkpoint atomically: `write` fills a temp dir, which is renamed into place, then
    /// all but the newest `keep_last` checkpoints are removed.
    pub fn save_checkpoint(
        &self,
        step: u64,
        keep_last: usize,
        write: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let dir = self.checkpoint_dir(step);
        let tmp = self
            .root
            .join("checkpoints")
            .join(format!(".tmp_step_{step:06}"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        write(&tmp).with_context(|| format!("writing checkpoint {}", dir.display()))?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::rename(&tmp, &dir)?;
        let mut all = self.checkpoints()?;
        while all.len() > keep_last.max(1) {
            let (_, old) = all.remove(0);
            std::fs::remove_dir_all(&old)
                .with_context(|| format!("removing old checkpoint {}", old.display()))?;
        }
        Ok(dir)
    }

    /// Completed checkpoints, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<(u64, PathBuf)>> {
        let mut out = Vec::new();
        let dir = self.root.join("checkpoints");
        if !dir.exists() {
            return Ok(out);
        }
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = name
                .strip_prefix("step_")
                .and_then(|s| s.parse::<u64>().ok())
            {
                if e.path().join("state.json").is_file() {
                    out.push((n, e.path()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn latest_checkpoint(&self) -> Result<Option<(u64, PathBuf)>> {
        Ok(self.checkpoints()?.pop())
    }
}

/// The current git commit of the working directory, if any (recorded for reproducibility).
pub fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_empty_dir_and_keeps_last_k() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("mine.txt"), "x").unwrap();
        assert!(RunDir::create(d.path()).is_err());
        let run = RunDir::create(&d.path().join("run")).unwrap();
        for s in [1, 2, 3] {
            run.save_checkpoint(s, 2, |p| Ok(std::fs::write(p.join("state.json"), "{}")?))
                .unwrap();
        }
        let steps: Vec<u64> = run
            .checkpoints()
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(steps, vec![2, 3]);
    }

    #[test]
    fn truncate_drops_lines_after_step() {
        let d = tempfile::tempdir().unwrap();
        let run = RunDir::create(&d.path().join("r")).unwrap();
        for s in 1..=4 {
            run.append_jsonl("metrics.jsonl", &serde_json::json!({"step": s}))
                .unwrap();
        }
        run.truncate_jsonl_after("metrics.jsonl", 2).unwrap();
        let text = std::fs::read_to_string(run.path("metrics.jsonl")).unwrap();
        assert_eq!(text, "{\"step\":1}\n{\"step\":2}\n");
    }
}
