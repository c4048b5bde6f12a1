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

use crate::progress::Reporter;

pub mod manifest;
pub use manifest::MANIFEST;

/// Which checkpoints keep the optimizer state (`[checkpoint] optimizer_state`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerState {
    /// Every kept checkpoint: any of them resumes exactly.
    #[default]
    All,
    /// Only the newest: older checkpoints hold the model (and the rest) without it.
    Latest,
}

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

    /// The run directory that rank 0 of a multi-process launch creates and writes; this
    /// process (another rank) only reads checkpoints from it, so nothing is checked or created.
    pub fn written_by_another_rank(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
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

    /// Remove what a new run wrote into this directory if it holds nothing of value (no
    /// metrics line, no checkpoint, no rollout, no file of anyone else), and the directory
    /// itself if the run `created` it. Returns whether anything was removed.
    pub fn discard_if_unused(&self, created: bool) -> Result<bool> {
        const OURS: [&str; 5] = [
            "recipe.resolved.toml",
            "run.json",
            "metrics.jsonl",
            "checkpoints",
            "rollouts",
        ];
        for e in std::fs::read_dir(&self.root)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let p = e.path();
            let empty_dir = p.is_dir() && std::fs::read_dir(&p)?.next().is_none();
            let empty_file = p.is_file() && std::fs::metadata(&p)?.len() == 0;
            let worthless = match name.as_str() {
                "recipe.resolved.toml" | "run.json" => true,
                "metrics.jsonl" => empty_file,
                "checkpoints" | "rollouts" => empty_dir,
                _ => false,
            };
            if !worthless {
                return Ok(false);
            }
        }
        for name in OURS {
            let p = self.path(name);
            if p.is_dir() {
                std::fs::remove_dir(&p)?;
            } else if p.exists() {
                std::fs::remove_file(&p)?;
            }
        }
        if created {
            std::fs::remove_dir(&self.root)?;
        }
        Ok(true)
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
        // One write of the whole line: `writeln!` on an unbuffered file issues a write per
        // formatted piece, so a kill between two left half a line for readers of a live run.
        let mut line = v.to_string();
        line.push('\n');
        f.write_all(line.as_bytes())?;
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

    /// Write a checkpoint atomically: `write` fills a temp dir, [`MANIFEST`] records the size and
    /// SHA-256 of every file in it, the dir is renamed into place, then all but the newest
    /// `keep_last` checkpoints are removed, and the files named in `latest_only` (e.g. the
    /// optimizer state) are dropped from all but the newest.
    pub fn save_checkpoint(
        &self,
        step: u64,
        keep_last: usize,
        latest_only: &[&str],
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
        manifest::write(&tmp)?;
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
        for (_, old) in all.iter().filter(|(s, _)| *s != step) {
            manifest::drop_files(old, latest_only)?;
        }
        Ok(dir)
    }

    /// The newest checkpoint whose files match their manifest. A damaged newer one is skipped
    /// with a warning through `report` naming the file and what is wrong with it; every one
    /// damaged is an error. Checkpoints written before manifests existed count as intact.
    pub fn newest_intact_checkpoint(
        &self,
        report: &dyn Reporter,
    ) -> Result<Option<(u64, PathBuf)>> {
        let all = self.checkpoints()?;
        let mut damaged = Vec::new();
        for (step, dir) in all.iter().rev() {
            match manifest::verify(dir) {
                Ok(()) => {
                    if !damaged.is_empty() {
                        report.message(&format!(
                            "warning: falling back to the newest intact checkpoint, {} \
                             (the damaged one is left in place and replaced when the run \
                             reaches its step again)",
                            dir.display()
                        ));
                    }
                    return Ok(Some((*step, dir.clone())));
                }
                Err(e) => {
                    report.message(&format!(
                        "warning: checkpoint {} is damaged: {e:#}",
                        dir.display()
                    ));
                    damaged.push(dir.display().to_string());
                }
            }
        }
        if !damaged.is_empty() {
            bail!(
                "every checkpoint of {} is damaged ({}); nothing intact to resume from",
                self.root.display(),
                damaged.join(", ")
            );
        }
        Ok(None)
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

/// What to do about a recipe's `[model] source` that does not exist (relative to `base_dir`, the
/// recipe's directory). A checkpoint of a run (`RUN/checkpoints/step_N/model`) names the recipe
/// to train that run with, when `base_dir` holds one named after the run; the default GGUF
/// names its fetch script.
pub fn missing_model_hint(source: &str, base_dir: &Path) -> String {
    let path = normalize(&base_dir.join(source));
    let parts: Vec<String> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if let Some(i) = parts
        .iter()
        .rposition(|p| p == "checkpoints")
        .filter(|&i| i > 0)
    {
        let run: PathBuf = parts[..i].iter().collect();
        let name = &parts[i - 1];
        if let Ok(r) = RunDir::open(&run) {
            let have: Vec<String> = r
                .checkpoints()
                .unwrap_or_default()
                .iter()
                .map(|(_, d)| d.display().to_string())
                .collect();
            return if have.is_empty() {
                format!(
                    "run {} has no checkpoint yet; resume it with `llmrl train --resume {}`",
                    run.display(),
                    run.display()
                )
            } else {
                format!(
                    "run {} has {}; pass one with `--set model.source={}/model`",
                    run.display(),
                    have.join(", "),
                    have[have.len() - 1]
                )
            };
        }
        let recipe = normalize(&base_dir.join(format!("{name}.toml")));
        return if recipe.is_file() {
            format!(
                "it is a checkpoint of run {}, which does not exist yet; train it first: \
                 `llmrl train {} --out {}`",
                run.display(),
                recipe.display(),
                run.display()
            )
        } else {
            format!(
                "it is a checkpoint of run {}, which does not exist yet; train that run first",
                run.display()
            )
        };
    }
    if source.ends_with(".gguf") && source.contains("SmolLM2") {
        return "run scripts/fetch_model.sh (it fetches SmolLM2-135M-Instruct into models/)".into();
    }
    "check the path; a relative path is resolved against the recipe's directory".into()
}

/// `a/b/../c` → `a/c`, `./x` → `x`: a path as a person would write it (no file system access).
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
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
            run.save_checkpoint(s, 2, &[], |p| {
                Ok(std::fs::write(p.join("state.json"), "{}")?)
            })
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

    /// A kill can tear the line being appended; the resume drops it with the later steps.
    #[test]
    fn truncate_drops_a_torn_last_line() {
        let d = tempfile::tempdir().unwrap();
        let run = RunDir::create(&d.path().join("r")).unwrap();
        run.append_jsonl("metrics.jsonl", &serde_json::json!({"step": 1}))
            .unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(run.path("metrics.jsonl"))
            .unwrap();
        f.write_all(b"{\"step\":2,\"lo").unwrap();
        run.truncate_jsonl_after("metrics.jsonl", 1).unwrap();
        let text = std::fs::read_to_string(run.path("metrics.jsonl")).unwrap();
        assert_eq!(text, "{\"step\":1}\n");
    }
}
