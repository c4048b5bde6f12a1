//! Hugging Face hub access through `hf-hub`: the cache is honoured, `HF_HUB_OFFLINE=1` resolves
//! from the cache only, and a file that is neither reachable nor cached is one clear error.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use hf_hub::{api::sync::ApiBuilder, Cache, Repo, RepoType};

/// `HF_HUB_OFFLINE` is set: resolve from the cache only.
pub(crate) fn offline() -> bool {
    matches!(
        std::env::var("HF_HUB_OFFLINE").as_deref(),
        Ok("1") | Ok("true") | Ok("TRUE") | Ok("yes")
    )
}

/// Resolve `filename` of repo `id` (models or datasets) to a local path.
pub fn fetch(id: &str, repo_type: RepoType, filename: &str) -> Result<PathBuf> {
    let (id, revision) = match id.split_once('@') {
        Some((i, r)) => (i.to_string(), r.to_string()),
        None => (id.to_string(), "main".to_string()),
    };
    let repo = Repo::with_revision(id.clone(), repo_type, revision);
    let cache = Cache::from_env();
    if let Some(p) = cache.repo(repo.clone()).get(filename) {
        return Ok(p);
    }
    if offline() {
        bail!(
            "`{filename}` of `{id}` is not in the hub cache ({}) and HF_HUB_OFFLINE is set; \
             download it once with network access, or pass a local directory / .gguf file",
            cache.path().display()
        );
    }
    let api = ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .context("creating the Hugging Face hub client")?;
    api.repo(repo).get(filename).map_err(once).with_context(|| {
        format!(
            "could not download `{filename}` of `{id}` from the hub and it is not cached in {}; \
             check the id and your network, or pass a local directory / .gguf file",
            cache.path().display()
        )
    })
}

/// A hub client error as one message: its `Display` already spells out the transport error
/// (DNS, TLS, HTTP status), which its source chain would repeat two more times.
pub(crate) fn once(e: hf_hub::api::sync::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Like `fetch`, but `Ok(None)` when the file does not exist in the repo (optional files).
pub fn fetch_optional(id: &str, repo_type: RepoType, filename: &str) -> Option<PathBuf> {
    fetch(id, repo_type, filename).ok()
}
