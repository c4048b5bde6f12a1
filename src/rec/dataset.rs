//! Interaction logs as a recipe's dataset (`[data] source = "rec"`): next-item examples whose
//! history and target are Semantic IDs, for SFT and RL on generative recommenders.
//!
//! Each example's fields (a contract with the RL rewards and `rec eval`):
//! - `history`: the history as the prompt shows it (`history_as`): SID strings (`<a_1><b_2><c_3>`)
//!   or titles, joined by `separator` (default `", "`, MiniOneRec's), or both (`title <sid>`);
//! - `history_sids`, `history_items` (raw ids), `history_titles` (when titles are known): lists;
//! - `target`: the target item's SID string, the SFT reference completion;
//! - `target_item`: the target's raw item id; `target_title` when titles are known;
//! - `user`, `part`.
//!
//! The log is read by `sequences` (RecBole `.inter`, JSON sequences) or `minionerec_csv` (one
//! already-split CSV), split (`loo` or `time`), and every logged item is checked against the SID
//! index before anything trains; bad input names the file and row.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::sequences::{self, Split, DEFAULT_MAX_HISTORY};
use super::sid::SidTable;
use crate::data::Example;

/// Which split of the log the dataset holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    #[default]
    Train,
    Valid,
    Test,
}

impl Part {
    pub fn name(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Valid => "valid",
            Self::Test => "test",
        }
    }
}

/// How the history reads in the prompt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum HistoryAs {
    /// SID strings (MiniOneRec's SID prompts; the only choice for a SID-only model).
    #[default]
    Sid,
    /// Item titles (needs `items`).
    Title,
    /// `title <a_1><b_2><c_3>` per item.
    Both,
}

fn default_split() -> Split {
    Split::Loo
}
fn default_history() -> usize {
    DEFAULT_MAX_HISTORY
}
fn default_separator() -> String {
    ", ".into()
}

/// `[data] source = "rec"`. Exactly one of `inter`, `sequences`, `csv`; paths are relative to the
/// recipe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecDataConfig {
    /// A RecBole `.inter` file (user_id, item_id, timestamp).
    pub inter: Option<PathBuf>,
    /// A JSON of ordered item ids per user, `{"user": [item, ...]}` (no timestamps).
    pub sequences: Option<PathBuf>,
    /// One MiniOneRec CSV split (already split: `split`/`part` are ignored).
    pub csv: Option<PathBuf>,
    /// The SID index, MiniOneRec's format (`llmrl sid build` writes it).
    pub index: PathBuf,
    /// Item titles: a RecBole `.item` (`movie_title` or `title` column) or an item-metadata JSON
    /// `{"id": {"title": ...}}`. A CSV carries its own titles.
    pub items: Option<PathBuf>,
    #[serde(default = "default_split")]
    pub split: Split,
    #[serde(default)]
    pub part: Part,
    #[serde(default = "default_history")]
    pub max_history: usize,
    #[serde(default)]
    pub history_as: HistoryAs,
    /// Between history items in `history`.
    #[serde(default = "default_separator")]
    pub separator: String,
    /// Keep only the first N users (in order of first appearance in the log; 0 = all).
    #[serde(default)]
    pub max_users: usize,
    /// Keep only the first N examples after `max_users` (0 = all).
    #[serde(default)]
    pub max_examples: usize,
}

impl RecDataConfig {
    /// A config for `part` of `log` (one of `inter`/`sequences`/`csv` set by the caller).
    pub fn new(index: PathBuf, split: Split, part: Part, max_history: usize) -> Self {
        Self {
            inter: None,
            sequences: None,
            csv: None,
            index,
            items: None,
            split,
            part,
            max_history,
            history_as: HistoryAs::Sid,
            separator: default_separator(),
            max_users: 0,
            max_examples: 0,
        }
    }

    /// The examples this config describes (module docs), validated against the index.
    pub fn load(&self, base_dir: &Path) -> Result<Vec<Example>> {
        let table = SidTable::read_index(&base_dir.join(&self.index))?;
        self.load_with(&table, base_dir)
    }

    /// As [`RecDataConfig::load`] with the SID table already read.
    pub fn load_with(&self, table: &SidTable, base_dir: &Path) -> Result<Vec<Example>> {
        ensure!(self.max_history >= 1, "max_history must be at least 1");
        let index_name = format!("the SID index {}", self.index.display());
        let known: HashSet<String> = table.items().iter().cloned().collect();
        let titles = match &self.items {
            Some(p) => read_titles(&base_dir.join(p))?,
            None => HashMap::new(),
        };
        let (raw, source) = match (&self.inter, &self.sequences, &self.csv) {
            (Some(p), None, None) | (None, Some(p), None) => {
                let path = base_dir.join(p);
                let log = if self.inter.is_some() {
                    sequences::read_atomic_inter(&path)?
                } else {
                    sequences::read_json_sequences(&path)?
                };
                log.validate_items(&known, &index_name)?;
                let splits = log.split(self.split, self.max_history)?;
                let part = match self.part {
                    Part::Train => splits.train,
                    Part::Valid => splits.valid,
                    Part::Test => splits.test,
                };
                let ids = |xs: &[u32]| xs.iter().map(|&i| log.items.id(i).to_string()).collect();
                let rows: Vec<RawExample> = part
                    .iter()
                    .map(|e| RawExample {
                        user: e.user.clone(),
                        history: ids(&e.history),
                        target: log.items.id(e.target).to_string(),
                        history_titles: None,
                        title: None,
                    })
                    .collect();
                (rows, path)
            }
            (None, None, Some(p)) => {
                let path = base_dir.join(p);
                let rows = sequences::read_minionerec_csv(&path)?;
                sequences::validate_csv_items(&path, &rows, &known, &index_name)?;
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    check_csv_sids(&path, r, table)?;
                    let keep = r.history_ids.len().saturating_sub(self.max_history);
                    out.push(RawExample {
                        user: r.user.clone(),
                        history: r.history_ids[keep..].to_vec(),
                        target: r.item_id.clone(),
                        history_titles: Some(r.history_titles[keep..].to_vec()),
                        title: Some(r.title.clone()),
                    });
                }
                (out, path)
            }
            _ => bail!(
                "[data] source = \"rec\" needs exactly one of `inter` (RecBole .inter), \
                 `sequences` (JSON) or `csv` (a MiniOneRec split)"
            ),
        };
        let raw = subset(raw, self.max_users, self.max_examples);
        let name = source
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(raw.len());
        for (k, r) in raw.iter().enumerate() {
            let id = format!("{name}:{}:{}", self.part.name(), k + 1);
            out.push(self.example(table, &titles, r, id)?);
        }
        Ok(out)
    }

    fn example(
        &self,
        table: &SidTable,
        titles: &HashMap<String, String>,
        r: &RawExample,
        id: String,
    ) -> Result<Example> {
        // validate_items ran before: every id is in the table.
        let sid = |item: &str| -> String {
            table
                .index_of(item)
                .map(|i| table.sid_string(i))
                .unwrap_or_default()
        };
        ensure!(
            !r.history.is_empty(),
            "example {id} (user `{}`): empty history; every example needs at least one earlier item",
            r.user
        );
        let hist_sids: Vec<String> = r.history.iter().map(|i| sid(i)).collect();
        let hist_titles: Option<Vec<String>> = match &r.history_titles {
            Some(t) => Some(t.clone()),
            None if !titles.is_empty() => Some(
                r.history
                    .iter()
                    .map(|i| titles.get(i).cloned().unwrap_or_default())
                    .collect(),
            ),
            None => None,
        };
        let history =
            match (self.history_as, &hist_titles) {
                (HistoryAs::Sid, _) => hist_sids.join(&self.separator),
                (HistoryAs::Title, Some(t)) => t.join(&self.separator),
                (HistoryAs::Both, Some(t)) => t
                    .iter()
                    .zip(&hist_sids)
                    .map(|(t, s)| format!("{t} {s}"))
                    .collect::<Vec<_>>()
                    .join(&self.separator),
                (_, None) => bail!(
                "history_as = \"{}\" needs item titles; hint: set `items` to the .item file or \
                 item-metadata JSON",
                if self.history_as == HistoryAs::Title { "title" } else { "both" }
            ),
            };
        let mut f = Map::new();
        f.insert("user".into(), r.user.clone().into());
        f.insert("part".into(), self.part.name().into());
        f.insert("history".into(), history.into());
        f.insert("history_sids".into(), json!(hist_sids));
        f.insert("history_items".into(), json!(r.history));
        f.insert("target".into(), sid(&r.target).into());
        f.insert("target_item".into(), r.target.clone().into());
        if let Some(t) = hist_titles {
            f.insert("history_titles".into(), json!(t));
        }
        let title = r.title.clone().or_else(|| titles.get(&r.target).cloned());
        if let Some(t) = title {
            f.insert("target_title".into(), Value::String(t));
        }
        Ok(Example { id, fields: f })
    }
}

/// One example with raw ids, before rendering.
struct RawExample {
    user: String,
    history: Vec<String>,
    target: String,
    history_titles: Option<Vec<String>>,
    title: Option<String>,
}

/// The first `max_users` users (order of first appearance), then the first `max_examples`.
fn subset(rows: Vec<RawExample>, max_users: usize, max_examples: usize) -> Vec<RawExample> {
    let mut users: HashSet<String> = HashSet::new();
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        if max_users > 0 && !users.contains(&r.user) {
            if users.len() == max_users {
                continue;
            }
            users.insert(r.user.clone());
        }
        out.push(r);
        if max_examples > 0 && out.len() == max_examples {
            break;
        }
    }
    out
}

/// A CSV row's SIDs must be the index's for its items (the CSV and the index from one build).
fn check_csv_sids(path: &Path, r: &sequences::CsvExample, table: &SidTable) -> Result<()> {
    let pairs = r
        .history_ids
        .iter()
        .zip(&r.history_sids)
        .chain(std::iter::once((&r.item_id, &r.sid)));
    for (id, sid) in pairs {
        let want = table.index_of(id).map(|i| table.sid_string(i));
        let got = sid.concat();
        if want.as_deref() != Some(got.as_str()) {
            bail!(
                "{} row {}: item `{id}` has SID `{got}` in the CSV but `{}` in the SID index; \
                 hint: use the index the CSV was built with",
                path.display(),
                r.row,
                want.unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// Item id → title from a RecBole `.item` (`movie_title` or `title` column) or a metadata JSON.
pub fn read_titles(path: &Path) -> Result<HashMap<String, String>> {
    if path.extension().is_some_and(|e| e == "item") {
        let items = sequences::read_atomic_items(path)?;
        let col = ["movie_title", "title"]
            .into_iter()
            .find(|c| items.first().is_some_and(|i| i.fields.contains_key(*c)))
            .with_context(|| {
                format!(
                    "{}: no `movie_title` or `title` column for item titles",
                    path.display()
                )
            })?;
        return Ok(items
            .into_iter()
            .map(|i| (i.id, i.fields.get(col).cloned().unwrap_or_default()))
            .collect());
    }
    let meta: BTreeMap<String, sequences::ItemMeta> = sequences::read_item_meta(path)?;
    Ok(meta.into_iter().map(|(k, m)| (k, m.title)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTER: &str = "user_id:token\titem_id:token\ttimestamp:float\n\
        u1\t1\t1\nu1\t2\t2\nu1\t3\t3\nu1\t4\t4\nu2\t2\t1\nu2\t3\t2\nu2\t1\t3\n";
    const INDEX: &str = r#"{"1": ["<a_0>", "<b_0>"], "2": ["<a_0>", "<b_1>"], "3": ["<a_1>", "<b_0>"], "4": ["<a_1>", "<b_1>"]}"#;
    const ITEMS: &str = "item_id:token\tmovie_title:token_seq\n1\tOne\n2\tTwo\n3\tThree\n4\tFour\n";

    fn dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("x.inter"), INTER).unwrap();
        std::fs::write(d.path().join("i.json"), INDEX).unwrap();
        std::fs::write(d.path().join("x.item"), ITEMS).unwrap();
        d
    }

    fn cfg(part: Part) -> RecDataConfig {
        let mut c = RecDataConfig::new("i.json".into(), Split::Loo, part, 2);
        c.inter = Some("x.inter".into());
        c
    }

    #[test]
    fn loo_parts_carry_sid_fields() {
        let d = dir();
        let test = cfg(Part::Test).load(d.path()).unwrap();
        assert_eq!(test.len(), 2);
        let f = &test[0].fields;
        assert_eq!(f["history"], "<a_0><b_1>, <a_1><b_0>");
        assert_eq!(f["target"], "<a_1><b_1>");
        assert_eq!(f["target_item"], "4");
        assert_eq!(f["history_items"], json!(["2", "3"]));
        assert_eq!(test[0].id, "x.inter:test:1");
        let train = cfg(Part::Train).load(d.path()).unwrap();
        // u1's targets 2, 3, 4 are train, valid, test; u2's (3, 1) valid and test.
        assert_eq!(train.len(), 1);
        assert_eq!(train[0].fields["target_item"], "2");
        let mut c = cfg(Part::Test);
        c.items = Some("x.item".into());
        c.history_as = HistoryAs::Both;
        c.separator = " | ".into();
        let ex = c.load(d.path()).unwrap();
        assert_eq!(ex[0].fields["history"], "Two <a_0><b_1> | Three <a_1><b_0>");
        assert_eq!(ex[0].fields["target_title"], "Four");
        c.max_users = 1;
        assert_eq!(c.load(d.path()).unwrap().len(), 1);
    }

    #[test]
    fn bad_input_is_named_before_training() {
        let d = dir();
        std::fs::write(
            d.path().join("small.json"),
            r#"{"1": ["<a_0>"], "2": ["<a_1>"]}"#,
        )
        .unwrap();
        let mut c = cfg(Part::Test);
        c.index = "small.json".into();
        let e = format!("{:#}", c.load(d.path()).unwrap_err());
        assert!(e.contains("x.inter row 4") && e.contains("`3`"), "{e}");
        let mut c = cfg(Part::Test);
        c.history_as = HistoryAs::Title;
        let e = format!("{:#}", c.load(d.path()).unwrap_err());
        assert!(e.contains("needs item titles"), "{e}");
        let mut c = cfg(Part::Test);
        c.sequences = Some("x.json".into());
        assert!(c
            .load(d.path())
            .unwrap_err()
            .to_string()
            .contains("exactly one"));

        // CSV: SIDs that disagree with the index, empty history, a history that is not a list,
        // a malformed SID string.
        let hdr = "user_id,history_item_title,item_title,history_item_id,item_id,history_item_sid,item_sid\n";
        let ok = "7,['One'],Two,['1'],2,['<a_0><b_0>'],<a_0><b_1>\n";
        let cases = [
            (
                "7,['One'],Two,['1'],2,['<a_0><b_0>'],<a_1><b_1>\n",
                "in the SID index",
            ),
            ("7,[],Two,[],2,[],<a_0><b_1>\n", "empty history"),
            (
                "7,['One'],Two,1,2,['<a_0><b_0>'],<a_0><b_1>\n",
                "not a list",
            ),
            (
                "7,['One'],Two,['1'],2,['<a_0><b_0>'],<a_0>b_1\n",
                "item_sid",
            ),
        ];
        for (i, (bad, want)) in cases.iter().enumerate() {
            let name = format!("c{i}.csv");
            std::fs::write(d.path().join(&name), format!("{hdr}{ok}{bad}")).unwrap();
            let mut c = RecDataConfig::new("i.json".into(), Split::Loo, Part::Test, 10);
            c.csv = Some(name.clone().into());
            let e = format!("{:#}", c.load(d.path()).unwrap_err());
            assert!(
                e.contains(&format!("{name} row 3")) && e.contains(want),
                "case {i}: {e}"
            );
        }
        std::fs::write(d.path().join("g.csv"), format!("{hdr}{ok}")).unwrap();
        let mut c = RecDataConfig::new("i.json".into(), Split::Loo, Part::Test, 10);
        c.csv = Some("g.csv".into());
        let ex = c.load(d.path()).unwrap();
        assert_eq!(ex[0].fields["history_titles"], json!(["One"]));
        assert_eq!(ex[0].fields["target"], "<a_0><b_1>");
    }
}
