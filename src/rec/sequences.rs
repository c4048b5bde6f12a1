//! Interaction logs → next-item examples (history → target) and their splits.
//!
//! Sources: RecBole atomic files (`.inter` with `user_id`, `item_id`, `timestamp` and optionally
//! `rating`; `.item`), MiniOneRec's CSV splits (already split; history columns are Python-literal
//! lists, SIDs strings such as `<a_165><b_214><c_252>`), and a plain JSON of ordered item ids per
//! user with an item-metadata JSON (`{"id": {"title", "description", "brand", "categories"}}`).
//!
//! Each user's interactions are sorted by timestamp (stable: ties keep file order). As MiniOneRec
//! builds them, there is one example per position of a user's sequence that has at least one item
//! before it; the history is the last `max_history` items before the target (default 10).
//!
//! Splits ([`Split`]):
//! - leave-one-out: a user's last item is the test target, the second-last the valid target, and
//!   every earlier position a train example (histories always come from the user's full prefix);
//! - global time 8:1:1: every example sorted by its target's timestamp; cut times are the target
//!   timestamps at ranks ⌊0.8 n⌋ and ⌊0.9 n⌋; train holds targets strictly before the first cut,
//!   valid those in [cut₁, cut₂), test the rest, so interactions at one instant never straddle a
//!   cut (nothing in train happens at or after a valid or test target).
//!
//! Items are dense indices `0..n` into an [`ItemIds`] table, in order of first appearance.
//! Errors on user input name the file and row (1-based line numbers, header = line 1).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::atomic::AtomicFile;

/// Default history length (MiniOneRec: the previous ≤ 10 items).
pub const DEFAULT_MAX_HISTORY: usize = 10;

/// Raw item ids ↔ dense indices `0..len()`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ItemIds {
    ids: Vec<String>,
    index: HashMap<String, u32>,
}

impl ItemIds {
    /// The index of `id`, adding it if new.
    pub fn intern(&mut self, id: &str) -> u32 {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let i = self.ids.len() as u32;
        self.ids.push(id.to_string());
        self.index.insert(id.to_string(), i);
        i
    }
    pub fn get(&self, id: &str) -> Option<u32> {
        self.index.get(id).copied()
    }
    /// The raw id of a dense index (panics on an index this table never gave out).
    pub fn id(&self, i: u32) -> &str {
        &self.ids[i as usize]
    }
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// One logged interaction, with where it came from (for error messages).
#[derive(Clone, Debug, PartialEq)]
pub struct Interaction {
    pub user: String,
    pub item: u32,
    pub timestamp: f64,
    /// 1-based line of the source file (for JSON sequences: the user's position in the file).
    pub row: usize,
}

/// An interaction log: every interaction in file order, and the item table.
#[derive(Clone, Debug, Default)]
pub struct Log {
    pub file: PathBuf,
    pub items: ItemIds,
    pub interactions: Vec<Interaction>,
    /// False for sources without timestamps (JSON sequences): the time split is then refused.
    pub timed: bool,
}

/// One next-item example.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Example {
    pub user: String,
    /// Dense item indices, oldest first, at most `max_history` long.
    pub history: Vec<u32>,
    pub target: u32,
    /// The target interaction's timestamp (its position for untimed logs).
    pub timestamp: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Last item test, second-last valid, the rest train.
    Loo,
    /// Global time-ordered 8:1:1 over all examples' target timestamps.
    Time,
}

#[derive(Clone, Debug, Default)]
pub struct Splits {
    pub train: Vec<Example>,
    pub valid: Vec<Example>,
    pub test: Vec<Example>,
}

impl Log {
    /// Users' item sequences sorted by time (stable), users in order of first appearance.
    pub fn sequences(&self) -> Vec<(String, Vec<&Interaction>)> {
        let mut order: Vec<String> = Vec::new();
        let mut by_user: HashMap<&str, Vec<&Interaction>> = HashMap::new();
        for x in &self.interactions {
            let seq = by_user.entry(&x.user).or_default();
            if seq.is_empty() {
                order.push(x.user.clone());
            }
            seq.push(x);
        }
        order
            .into_iter()
            .map(|u| {
                let mut seq = by_user.remove(u.as_str()).unwrap_or_default();
                // sort_by is stable: equal timestamps keep file order.
                seq.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
                (u, seq)
            })
            .collect()
    }

    /// Fails on the first interaction whose item is not in `known` (raw ids, e.g. the keys of an
    /// item table or SID index), naming the file and row.
    pub fn validate_items(&self, known: &HashSet<String>, table: &str) -> Result<()> {
        for x in &self.interactions {
            let id = self.items.id(x.item);
            if !known.contains(id) {
                bail!(
                    "{} row {}: item `{id}` (user `{}`) is not in {table}; \
                     hint: build the table from the same catalogue, or drop the item's interactions",
                    self.file.display(),
                    x.row,
                    x.user
                );
            }
        }
        Ok(())
    }

    /// Examples of the given split with histories truncated to `max_history` items.
    pub fn split(&self, split: Split, max_history: usize) -> Result<Splits> {
        ensure!(max_history >= 1, "max_history must be at least 1");
        if split == Split::Time && !self.timed {
            bail!(
                "{} has no timestamps, so it cannot be split by time; hint: use the \
                 leave-one-out split (--split loo)",
                self.file.display()
            );
        }
        let mut out = Splits::default();
        let mut all = Vec::new();
        for (user, seq) in self.sequences() {
            let items: Vec<u32> = seq.iter().map(|x| x.item).collect();
            let n = items.len();
            for t in 1..n {
                let ex = Example {
                    user: user.clone(),
                    history: items[t.saturating_sub(max_history)..t].to_vec(),
                    target: items[t],
                    timestamp: seq[t].timestamp,
                };
                match split {
                    Split::Time => all.push(ex),
                    Split::Loo if t == n - 1 => out.test.push(ex),
                    Split::Loo if t == n - 2 => out.valid.push(ex),
                    Split::Loo => out.train.push(ex),
                }
            }
        }
        if split == Split::Time {
            all.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
            let n = all.len();
            ensure!(
                n >= 10,
                "{}: only {n} examples; the 8:1:1 time split needs at least 10",
                self.file.display()
            );
            let cut1 = all[n * 8 / 10].timestamp;
            let cut2 = all[n * 9 / 10].timestamp;
            for ex in all {
                if ex.timestamp < cut1 {
                    out.train.push(ex);
                } else if ex.timestamp < cut2 {
                    out.valid.push(ex);
                } else {
                    out.test.push(ex);
                }
            }
        }
        Ok(out)
    }
}

// ------------------------------------------------------------------------------------------------
// RecBole atomic files

/// A RecBole `.inter` header, for hints.
const INTER_HEADER: &str = "user_id:token\\titem_id:token\\trating:float\\ttimestamp:float";

/// Reads a RecBole `.inter` file (tab-separated, `name:type` header; needs `user_id`, `item_id`,
/// `timestamp`).
pub fn read_atomic_inter(path: &Path) -> Result<Log> {
    let file = AtomicFile::read(path, "interactions")?;
    let (u, i, t) = (
        file.column("user_id", INTER_HEADER)?,
        file.column("item_id", INTER_HEADER)?,
        file.column("timestamp", INTER_HEADER)?,
    );
    let mut log = Log {
        file: path.to_path_buf(),
        timed: true,
        ..Log::default()
    };
    for r in file.rows() {
        let (row, cols) = r?;
        let timestamp: f64 = cols[t].trim().parse().map_err(|_| {
            anyhow::anyhow!(
                "{} row {row}: timestamp `{}` is not a number",
                path.display(),
                cols[t]
            )
        })?;
        let (user, item) = (cols[u].trim(), cols[i].trim());
        ensure!(
            !user.is_empty() && !item.is_empty(),
            "{} row {row}: empty user_id or item_id",
            path.display()
        );
        let item = log.items.intern(item);
        log.interactions.push(Interaction {
            user: user.to_string(),
            item,
            timestamp,
            row,
        });
    }
    ensure!(
        !log.interactions.is_empty(),
        "{} holds no interactions",
        path.display()
    );
    Ok(log)
}

/// One row of a RecBole `.item` file: the id and every other column by name.
#[derive(Clone, Debug, PartialEq)]
pub struct AtomicItem {
    pub id: String,
    pub fields: BTreeMap<String, String>,
}

/// Reads a RecBole `.item` file (needs `item_id`).
pub fn read_atomic_items(path: &Path) -> Result<Vec<AtomicItem>> {
    let file = AtomicFile::read(path, "items")?;
    let id_col = file.column("item_id", "item_id:token\\tmovie_title:token_seq\\t...")?;
    let mut out = Vec::new();
    for r in file.rows() {
        let (_, cols) = r?;
        let fields = file
            .header
            .iter()
            .zip(&cols)
            .enumerate()
            .filter(|(c, _)| *c != id_col)
            .map(|(_, ((h, _), v))| (h.clone(), v.trim().to_string()))
            .collect();
        out.push(AtomicItem {
            id: cols[id_col].trim().to_string(),
            fields,
        });
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------------
// JSON sequences and item metadata

/// An item's text in MiniOneRec's `*.item.json` (`description` is often a stringified list).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemMeta {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: serde_json::Value,
    #[serde(default)]
    pub brand: serde_json::Value,
    #[serde(default)]
    pub categories: serde_json::Value,
}

/// Reads `{"id": {"title", "description", "brand", "categories"}}`.
pub fn read_item_meta(path: &Path) -> Result<BTreeMap<String, ItemMeta>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading item metadata {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected {{\"item_id\": {{\"title\": ..., \"description\": ..., \"brand\": ..., \
             \"categories\": ...}}}}",
            path.display()
        )
    })
}

/// Reads `{"user": [item, item, ...]}` (ids as strings or numbers, oldest first). There are no
/// timestamps: an item's position stands in for its time, and the time split is refused.
pub fn read_json_sequences(path: &Path) -> Result<Log> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading sequences {}", path.display()))?;
    // serde_json's preserve_order is off: a BTreeMap gives a deterministic user order.
    let users: BTreeMap<String, Vec<serde_json::Value>> = serde_json::from_str(&text)
        .with_context(|| {
            format!(
                "{}: expected {{\"user_id\": [item_id, ...]}} with items oldest first",
                path.display()
            )
        })?;
    let mut log = Log {
        file: path.to_path_buf(),
        timed: false,
        ..Log::default()
    };
    for (row, (user, items)) in users.into_iter().enumerate() {
        for (pos, v) in items.iter().enumerate() {
            let id = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                other => bail!(
                    "{} user `{user}` (entry {}): item {pos} is {other}, not an id (string or number)",
                    path.display(),
                    row + 1
                ),
            };
            let item = log.items.intern(&id);
            log.interactions.push(Interaction {
                user: user.clone(),
                item,
                timestamp: pos as f64,
                row: row + 1,
            });
        }
    }
    Ok(log)
}

pub use super::minionerec_csv::{
    csv_examples, parse_py_list, parse_sid, read_minionerec_csv, validate_csv_items, CsvExample,
    CSV_COLUMNS,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// u1: 5 items with a timestamp tie (b and c at t=20, in file order c then b... see rows);
    /// u2: 2 items; u3: 1 item.
    const INTER: &str = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n\
        u1\ta\t5\t10\n\
        u2\tx\t3\t15\n\
        u1\tc\t4\t20\n\
        u1\tb\t4\t20\n\
        u3\tz\t1\t5\n\
        u1\te\t2\t40\n\
        u1\td\t2\t30\n\
        u2\ty\t3\t16\n";

    fn ids(log: &Log, xs: &[u32]) -> Vec<String> {
        xs.iter().map(|&i| log.items.id(i).to_string()).collect()
    }

    #[test]
    fn leave_one_out_sorts_stably_and_splits_last_two() {
        let dir = tempfile::tempdir().unwrap();
        let log = read_atomic_inter(&write(&dir, "x.inter", INTER)).unwrap();
        let seqs = log.sequences();
        let u1: Vec<&str> = seqs[0].1.iter().map(|x| log.items.id(x.item)).collect();
        // c and b share t=20: file order (c before b) is kept.
        assert_eq!(u1, ["a", "c", "b", "d", "e"]);
        let s = log.split(Split::Loo, 10).unwrap();
        let tgt = |v: &[Example]| -> Vec<(String, Vec<String>, String)> {
            v.iter()
                .map(|e| {
                    (
                        e.user.clone(),
                        ids(&log, &e.history),
                        log.items.id(e.target).to_string(),
                    )
                })
                .collect()
        };
        let sv = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            tgt(&s.test),
            vec![
                ("u1".into(), sv(&["a", "c", "b", "d"]), "e".into()),
                ("u2".into(), sv(&["x"]), "y".into())
            ]
        );
        // u2 (2 items) has no valid example: its second-last item has an empty history.
        assert_eq!(
            tgt(&s.valid),
            vec![("u1".into(), sv(&["a", "c", "b"]), "d".into())]
        );
        assert_eq!(
            tgt(&s.train),
            vec![
                ("u1".into(), sv(&["a"]), "c".into()),
                ("u1".into(), sv(&["a", "c"]), "b".into())
            ]
        );
    }

    #[test]
    fn history_is_truncated_to_the_last_n() {
        let dir = tempfile::tempdir().unwrap();
        let log = read_atomic_inter(&write(&dir, "x.inter", INTER)).unwrap();
        let s = log.split(Split::Loo, 2).unwrap();
        assert_eq!(ids(&log, &s.test[0].history), ["b", "d"]);
        assert_eq!(ids(&log, &s.train[1].history), ["a", "c"]);
    }

    #[test]
    fn time_split_cuts_at_target_timestamps_8_1_1() {
        // One user, 12 items at t = 0..11 except a tie: items 9 and 10 both at t = 9.
        let mut text = String::from("user_id:token\titem_id:token\ttimestamp:float\n");
        let ts = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 11];
        for (i, t) in ts.iter().enumerate() {
            text.push_str(&format!("u\ti{i}\t{t}\n"));
        }
        let dir = tempfile::tempdir().unwrap();
        let log = read_atomic_inter(&write(&dir, "t.inter", &text)).unwrap();
        let s = log.split(Split::Time, 10).unwrap();
        // 11 examples (targets i1..i11, t = 1..9,9,11); cut1 = t of rank ⌊8.8⌋ = 8 → t=9;
        // cut2 = rank ⌊9.9⌋ = 9 → t=9: the tie lands wholly in test, valid is empty.
        let tt = |v: &[Example]| v.iter().map(|e| e.timestamp).collect::<Vec<_>>();
        assert_eq!(tt(&s.train), [1., 2., 3., 4., 5., 6., 7., 8.]);
        assert!(s.valid.is_empty());
        assert_eq!(tt(&s.test), [9., 9., 11.]);
        // Without the tie: 11 examples at t = 1..11 → train 1..8, valid 9, test 10, 11.
        let text2: String =
            std::iter::once("user_id:token\titem_id:token\ttimestamp:float\n".to_string())
                .chain((0..12).map(|i| format!("u\ti{i}\t{i}\n")))
                .collect();
        let log = read_atomic_inter(&write(&dir, "t2.inter", &text2)).unwrap();
        let s = log.split(Split::Time, 3).unwrap();
        assert_eq!(tt(&s.train), [1., 2., 3., 4., 5., 6., 7., 8.]);
        assert_eq!(tt(&s.valid), [9.]);
        assert_eq!(tt(&s.test), [10., 11.]);
        assert_eq!(s.test[1].history.len(), 3);
    }

    #[test]
    fn unknown_items_and_bad_rows_name_file_and_row() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "x.inter", INTER);
        let log = read_atomic_inter(&p).unwrap();
        let known: HashSet<String> = ["a", "b", "c", "d", "e", "x", "z"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let e = log
            .validate_items(&known, "the SID index")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.inter row 9") && e.contains("`y`"), "{e}");
        let bad = write(
            &dir,
            "b.inter",
            "user_id:token\titem_id:token\ttimestamp:float\nu\ti\tsoon\n",
        );
        let e = read_atomic_inter(&bad).unwrap_err().to_string();
        assert!(e.contains("b.inter row 2") && e.contains("soon"), "{e}");
        let nohdr = write(&dir, "n.inter", "user\titem\n1\t2\n");
        assert!(read_atomic_inter(&nohdr)
            .unwrap_err()
            .to_string()
            .contains("user_id"));
    }

    #[test]
    fn json_sequences_keep_order_and_refuse_the_time_split() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "s.json", r#"{"u1": ["3", 1, "2"], "u2": [5, 6]}"#);
        let log = read_json_sequences(&p).unwrap();
        let s = log.split(Split::Loo, 10).unwrap();
        assert_eq!(ids(&log, &s.test[0].history), ["3", "1"]);
        assert_eq!(log.items.id(s.test[0].target), "2");
        assert!(log
            .split(Split::Time, 10)
            .unwrap_err()
            .to_string()
            .contains("no timestamps"));
        let meta = write(
            &dir,
            "m.json",
            r#"{"1": {"title": "A", "description": "['x']", "brand": "B", "categories": ["c"]}}"#,
        );
        assert_eq!(read_item_meta(&meta).unwrap()["1"].title, "A");
    }

    #[test]
    fn sid_and_python_lists_parse() {
        assert_eq!(
            parse_sid("<a_165><b_214><c_252>").unwrap(),
            ["<a_165>", "<b_214>", "<c_252>"]
        );
        assert!(parse_sid("<a_1><c_2>").is_err());
        assert!(parse_sid("<a_1><b_x>").is_err());
        assert!(parse_sid("a_1").is_err());
        assert!(parse_sid("<a_1").is_err());
        assert!(parse_sid("").is_err());
        assert_eq!(
            parse_py_list("['a', \"b's\", 'c\\'d']").unwrap(),
            ["a", "b's", "c'd"]
        );
        assert_eq!(parse_py_list("[1, 2.5]").unwrap(), ["1", "2.5"]);
        assert!(parse_py_list("[]").unwrap().is_empty());
        assert!(parse_py_list("'a', 'b'").is_err());
        assert!(parse_py_list("[a, b]").is_err());
        assert!(parse_py_list("['a' 'b']").is_err());
    }

    const HDR: &str =
        "user_id,history_item_title,item_title,history_item_id,item_id,history_item_sid,item_sid\n";

    #[test]
    fn minionerec_csv_reads_and_each_bad_row_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let good = format!(
            "{HDR}7,\"['Pen, blue', \"\"Men's cap\"\"]\",Ink,\"[11, 12]\",13,\"['<a_1><b_2><c_3>', '<a_4><b_5><c_6>']\",<a_7><b_8><c_9>\n"
        );
        let rows = read_minionerec_csv(&write(&dir, "g.csv", &good)).unwrap();
        assert_eq!(rows[0].history_titles, ["Pen, blue", "Men's cap"]);
        assert_eq!(rows[0].history_ids, ["11", "12"]);
        assert_eq!(rows[0].sid, ["<a_7>", "<b_8>", "<c_9>"]);
        assert_eq!(rows[0].history_sids[1], ["<a_4>", "<b_5>", "<c_6>"]);
        let mut items = ItemIds::default();
        let ex = csv_examples(&rows, &mut items, 1);
        assert_eq!(ex[0].history.len(), 1);
        assert_eq!(items.id(ex[0].history[0]), "12");
        let known: HashSet<String> = ["11", "13"].iter().map(|s| s.to_string()).collect();
        let e = validate_csv_items(Path::new("g.csv"), &rows, &known, "the index").unwrap_err();
        assert!(
            e.to_string().contains("row 2") && e.to_string().contains("`12`"),
            "{e}"
        );

        let ok_row = "1,['t'],T,[1],2,['<a_1><b_1>'],<a_2><b_2>\n";
        let cases = [
            ("1,[],T,[],2,[],<a_2><b_2>\n", "empty history"),
            ("1,['t'],T,[1],2,['<a_1><b_1>'],<a_2><c_2>\n", "item_sid"),
            (
                "1,['t'],T,[1],2,['<a_1>b_1'],<a_2><b_2>\n",
                "history_item_sid",
            ),
            ("1,['t'],T,1,2,['<a_1><b_1>'],<a_2><b_2>\n", "not a list"),
            (
                "1,['t'],T,\"[1, 3]\",2,['<a_1><b_1>'],<a_2><b_2>\n",
                "differ in length",
            ),
        ];
        for (i, (bad, want)) in cases.iter().enumerate() {
            let p = write(&dir, &format!("b{i}.csv"), &format!("{HDR}{ok_row}{bad}"));
            let e = read_minionerec_csv(&p).unwrap_err().to_string();
            assert!(
                e.contains(&format!("b{i}.csv row 3")) && e.contains(want),
                "case {i}: {e}"
            );
        }
        let p = write(&dir, "h.csv", "user_id,item_id\n1,2\n");
        assert!(read_minionerec_csv(&p)
            .unwrap_err()
            .to_string()
            .contains("history_item_title"));
    }
}
