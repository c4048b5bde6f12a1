//! The simulator as a reward for recommendation RL: a [`Verifier`] that scores one
//! recommendation step (a completion naming one item) by the simulated response of the
//! example's user, whose history is the example's own `history_items` labelled by that user's
//! logged ratings (the `[data] source = "rec"` examples carry `user` and `history_items`).
//!
//! The completion is an item's raw id, or, with a SID table, its Semantic ID (`<a_1><b_2>...`;
//! a SID shared by several items names the first). Reward `vote`: 1 for a simulated like, else
//! 0; `score`: the ensemble's continuous score. A completion that names no item scores 0 with
//! the reason; an example without `user` is a dataset error at load time. History items the
//! user has no logged rating for are left out (the reason counts them).
//!
//! As a recipe's `[verifier] name = "usersim"` ([`UsersimConfig`]), the simulator is fitted
//! when the judge is built: S on each user's earlier ratings, its calibration on the ratings
//! after them, and each user's latest `holdout_frac` never seen, so a recommender's held-out
//! targets (leave-one-out: each user's last two items) stay unseen by its reward.

use std::collections::HashMap;
use std::sync::Arc;

use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ratings::{self, Scale};
use super::sim::Simulator;
use super::stat::MfConfig;
use super::table::ProfileTable;
use crate::data::Example;
use crate::rec::minionerec_csv::parse_sid;
use crate::rec::sid::SidTable;
use crate::reward::{Score, Verifier};

/// What the reward is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimReward {
    /// 1 for a simulated like, else 0.
    #[default]
    Vote,
    /// The ensemble's score in (0, 1).
    Score,
}

/// `[verifier] name = "usersim"`: the simulator of a `usersim build` table and a ratings log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersimConfig {
    /// A `llmrl usersim build` output directory (keywords.jsonl, pros/cons.safetensors),
    /// relative to the recipe.
    pub profiles: PathBuf,
    /// A RecBole `.inter` file with `rating` (and `timestamp`) columns, relative to the recipe.
    pub inter: PathBuf,
    /// MiniOneRec index JSON when completions are Semantic IDs (default: the recipe's
    /// `[generation] constraint` index); without one, a completion is a raw item id.
    #[serde(default)]
    pub sid_index: Option<PathBuf>,
    #[serde(default)]
    pub reward: SimReward,
    #[serde(default = "default_scale")]
    pub scale: Scale,
    /// Share of each user's latest ratings the simulator never sees.
    #[serde(default = "default_holdout")]
    pub holdout_frac: f64,
    /// Share of each user's ratings (the latest before the held-out ones) that early-stops S and
    /// fits the calibrations.
    #[serde(default = "default_valid")]
    pub valid_frac: f64,
    /// S's factor width.
    #[serde(default = "default_dim")]
    pub dim: usize,
    #[serde(default)]
    pub seed: u64,
}

fn default_scale() -> Scale {
    Scale::default()
}
fn default_holdout() -> f64 {
    0.2
}
fn default_valid() -> f64 {
    0.1
}
fn default_dim() -> usize {
    32
}

impl UsersimConfig {
    /// Anchors relative paths at `base_dir` (the recipe's directory).
    pub fn resolve_paths(&mut self, base_dir: &std::path::Path) {
        for p in [&mut self.profiles, &mut self.inter]
            .into_iter()
            .chain(self.sid_index.as_mut())
        {
            if p.is_relative() {
                *p = base_dir.join(&*p);
            }
        }
    }

    /// What can be checked without reading the files' contents.
    pub fn validate(&self) -> Result<()> {
        self.scale.validate()?;
        ensure!(
            self.profiles.join("keywords.jsonl").is_file(),
            "verifier.profiles = {} holds no keywords.jsonl; hint: make it with `llmrl usersim \
             build --items ITEMS --out DIR`",
            self.profiles.display()
        );
        ensure!(
            self.inter.is_file(),
            "verifier.inter = {} is not a file",
            self.inter.display()
        );
        Ok(())
    }
}

/// The judge: a fitted simulator, the users' logged labels, and how completions name items.
pub struct UserSimJudge {
    sim: Arc<Simulator>,
    /// user → item → liked.
    labels: HashMap<String, HashMap<String, bool>>,
    sids: Option<SidTable>,
    reward: SimReward,
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl UserSimJudge {
    /// `labels` are (user, item, liked) from the logs the history items come from.
    pub fn new(
        sim: Arc<Simulator>,
        labels: impl IntoIterator<Item = (String, String, bool)>,
        sids: Option<SidTable>,
        reward: SimReward,
    ) -> Self {
        let mut m: HashMap<String, HashMap<String, bool>> = HashMap::new();
        for (u, i, l) in labels {
            m.entry(u).or_default().insert(i, l);
        }
        Self {
            sim,
            labels: m,
            sids,
            reward,
        }
    }

    /// Fits the simulator `cfg` describes (seconds to a minute on MovieLens-100K).
    pub fn from_config(cfg: &UsersimConfig) -> Result<Self> {
        cfg.validate()?;
        let rated = ratings::read_ratings(&cfg.inter, &cfg.scale).context("verifier.inter")?;
        // The split of `usersim eval`: S and the calibrations never see `test`, the held-out
        // tail, so this is the simulator whose fidelity `usersim eval` measures.
        let split = ratings::split(&rated, cfg.valid_frac, cfg.holdout_frac)?;
        let table = ProfileTable::read(&cfg.profiles).context("verifier.profiles")?;
        let mf = MfConfig {
            dim: cfg.dim,
            seed: cfg.seed,
            ..MfConfig::default()
        };
        let (sim, _) = Simulator::fit(table, &split, &cfg.scale, &mf, &crate::progress::Silent)?;
        let sids = match &cfg.sid_index {
            Some(p) => Some(SidTable::read_index(p).context("verifier.sid_index")?),
            None => None,
        };
        let labels = rated
            .iter()
            .map(|r| (r.user.clone(), r.item.clone(), cfg.scale.liked(r.rating)));
        Ok(Self::new(Arc::new(sim), labels, sids, cfg.reward))
    }

    /// The item a completion names.
    fn item(&self, completion: &str) -> std::result::Result<String, String> {
        let compact: String = completion.split_whitespace().collect();
        if compact.is_empty() {
            return Err("empty completion: no item".into());
        }
        let Some(t) = &self.sids else {
            // A raw id: an item of the catalogue the simulator knows (keywords or ratings).
            if self.sim.table.get(&compact).is_none() && !self.sim.stat.knows_item(&compact) {
                return Err(format!("`{compact}` is not an item of the catalogue"));
            }
            return Ok(compact);
        };
        let sid = parse_sid(&compact).map_err(|e| format!("not a SID: {e}"))?;
        let codes = t
            .codes_of_tokens(&sid)
            .ok_or_else(|| format!("`{compact}` is not a SID of the table"))?;
        let items = t.items_with(&codes);
        items
            .first()
            .map(|&i| t.items()[i].clone())
            .ok_or_else(|| format!("`{compact}` names no item"))
    }
}

impl Verifier for UserSimJudge {
    fn name(&self) -> &str {
        "usersim"
    }

    fn validate(&self, example: &Example) -> Result<()> {
        match example.fields.get("user").and_then(id_text) {
            Some(_) => Ok(()),
            None => bail!(
                "no `user` field (the simulated user's id); hint: use [data] source = \"rec\""
            ),
        }
    }

    fn score(&self, example: &Example, completion: &str) -> Score {
        let Some(user) = example.fields.get("user").and_then(id_text) else {
            return Score::zero("no `user` field");
        };
        let item = match self.item(completion) {
            Ok(i) => i,
            Err(why) => return Score::zero(why),
        };
        let logged = self.labels.get(&user);
        let items: Vec<String> = match example.fields.get("history_items") {
            Some(Value::Array(a)) => a.iter().filter_map(id_text).collect(),
            _ => Vec::new(),
        };
        let hist: Vec<(String, bool)> = items
            .iter()
            .filter_map(|i| logged.and_then(|m| m.get(i)).map(|&l| (i.clone(), l)))
            .collect();
        let fb = self.sim.feedback(&user, &hist, &item);
        let v = |b: Option<bool>| b.map_or(-1.0, |b| f32::from(u8::from(b)));
        let value = match self.reward {
            SimReward::Vote => f32::from(u8::from(fb.like)),
            SimReward::Score => fb.score as f32,
        };
        let unlabelled = items.len() - hist.len();
        Score {
            value,
            correct: fb.like,
            parts: vec![
                ("format".into(), 1.0),
                ("like".into(), f32::from(u8::from(fb.like))),
                ("sim_score".into(), fb.score as f32),
                ("vote_a".into(), v(fb.a.vote)),
                ("vote_b".into(), v(fb.b.vote)),
                ("vote_s".into(), v(fb.s.vote)),
            ],
            reason: format!(
                "{} ({}); A: {}; B: {}; S: {}{}",
                if fb.like { "like" } else { "no like" },
                fb.decided_by,
                fb.a.reason,
                fb.b.reason,
                fb.s.reason,
                if unlabelled > 0 {
                    format!("; {unlabelled} history items without a logged rating left out")
                } else {
                    String::new()
                }
            ),
            answer: Some(item),
        }
    }
}
