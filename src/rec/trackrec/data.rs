//! TrackRec's binary preference prompts: a user's history, a candidate item and whether the
//! user liked it.
//!
//! Every source becomes the same rows ([`PromptRow`] as an [`Example`] with fields `history`,
//! `candidate`, `domain`, `label` = "Yes"/"No"), so G's and V's templates read one shape:
//! - `tallrec`: TALLRec's `valid.json`/`test.json` (`instruction`, `input`, `output`). The target
//!   item sits inside `input` (its last line, `Whether the user will like the target movie
//!   "X"?`); it is parsed out, so `history` holds only the liked/disliked lines and G never sees
//!   the candidate. No user ids: train on `valid`, test on `test`.
//! - `ml100k`: a RecBole `.inter` with ratings and its `.item`: per user (time order), the last
//!   `per_user` positions with at least `min_history` items before them; history = the previous
//!   ≤ `max_history` titles with their ratings, label = rating ≥ 4. Users are shuffled by
//!   `split_seed` and cut into train / valid / test (user-disjoint).
//! - `jsonl`: rows that already have `history`, `candidate` and `label` (`domain` optional).
//!
//! Labels are "Yes"/"No" in any case with an optional final `.`/`!`, true/false or 1/0; anything
//! else, or a missing label, is an error naming the row, raised before any model loads.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::{Example, PromptTemplate};

/// Fields G's template may not read: the candidate and the label are V's business.
pub const HIDDEN_FROM_G: [&str; 2] = ["candidate", "label"];

/// `[data]` of a TrackRec recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum PromptSource {
    Tallrec {
        /// Training prompts (TALLRec's `valid.json`).
        train: PathBuf,
        /// Held-out prompts (TALLRec's `test.json`).
        test: PathBuf,
    },
    Ml100k {
        /// RecBole `.inter` with `rating`.
        inter: PathBuf,
        /// RecBole `.item` with `movie_title` (and `release_year`).
        items: PathBuf,
        #[serde(default = "default_max_history")]
        max_history: usize,
        #[serde(default = "default_min_history")]
        min_history: usize,
        /// Examples per user (its last positions).
        #[serde(default = "default_per_user")]
        per_user: usize,
        /// Shares of users held out for valid and test (each).
        #[serde(default = "default_holdout")]
        holdout: f64,
        #[serde(default)]
        split_seed: u64,
    },
    Jsonl {
        train: PathBuf,
        test: PathBuf,
    },
}

fn default_max_history() -> usize {
    10
}
fn default_min_history() -> usize {
    5
}
fn default_per_user() -> usize {
    2
}
fn default_holdout() -> f64 {
    0.1
}

/// The prompts of one run: what G and V train on and what V is tested on.
#[derive(Clone, Debug)]
pub struct PromptSets {
    /// G's training prompts (sampled, scored and turned into preferences every round).
    pub train: Vec<Example>,
    /// V's training prompts: G's, plus more where the recipe asks V to learn from more rows than
    /// G samples for (a superset of `train`, in file order).
    pub validator: Vec<Example>,
    pub test: Vec<Example>,
    /// Size of each part before subsampling (train, valid, test); valid is 0 where the source
    /// has none.
    pub available: [usize; 3],
}

impl PromptSource {
    /// Reads the source (paths relative to `base_dir`), checks every row, and keeps a seeded
    /// sample of at most `max_train` / `max_test` rows (0 = all). V's training rows are a seeded
    /// sample of `max_validator` rows (0: G's rows) and G's are drawn from them, so G's prompts
    /// are always among V's.
    pub fn load(
        &self,
        base_dir: &Path,
        max_train: usize,
        max_validator: usize,
        max_test: usize,
        seed: u64,
    ) -> Result<PromptSets> {
        let at = |p: &Path| base_dir.join(p);
        let (train, valid, test) = match self {
            PromptSource::Tallrec { train, test } => {
                (read_tallrec(&at(train))?, vec![], read_tallrec(&at(test))?)
            }
            PromptSource::Jsonl { train, test } => {
                (read_jsonl(&at(train))?, vec![], read_jsonl(&at(test))?)
            }
            PromptSource::Ml100k {
                inter,
                items,
                max_history,
                min_history,
                per_user,
                holdout,
                split_seed,
            } => {
                ensure!(
                    *holdout > 0.0 && *holdout < 0.5,
                    "[data] holdout = {holdout} must lie in (0, 0.5): the share of users in valid \
                     and in test each"
                );
                ensure!(
                    *max_history >= 1 && *per_user >= 1,
                    "[data] max_history and per_user must be ≥ 1"
                );
                let s = Ml100kSpec {
                    max_history: *max_history,
                    min_history: *min_history,
                    per_user: *per_user,
                    holdout: *holdout,
                    split_seed: *split_seed,
                };
                read_ml100k(&at(inter), &at(items), &s)?
            }
        };
        ensure!(
            !train.is_empty() && !test.is_empty(),
            "[data] needs training and test prompts; found {} and {}",
            train.len(),
            test.len()
        );
        let available = [train.len(), valid.len(), test.len()];
        // V's sample first, G's from it: with V's count equal to G's (or 0) the second draw
        // keeps every row, so G and V share exactly the sample a run without V's own had.
        let max_validator = if max_validator == 0 {
            max_train
        } else {
            max_validator
        };
        let validator = subsample(train, max_validator, seed);
        Ok(PromptSets {
            train: subsample(validator.clone(), max_train, seed ^ 0x6E),
            validator,
            test: subsample(test, max_test, seed ^ 0x7E57),
            available,
        })
    }
}

/// At most `n` rows (0 = all), a seeded sample kept in file order.
fn subsample(rows: Vec<Example>, n: usize, seed: u64) -> Vec<Example> {
    if n == 0 || rows.len() <= n {
        return rows;
    }
    let mut idx: Vec<usize> = (0..rows.len()).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    idx.truncate(n);
    idx.sort_unstable();
    idx.into_iter().map(|i| rows[i].clone()).collect()
}

/// One prompt row as an example with TrackRec's field names.
pub fn prompt_row(
    id: String,
    history: &str,
    candidate: &str,
    domain: &str,
    label: bool,
) -> Example {
    let mut fields = serde_json::Map::new();
    fields.insert("history".into(), history.into());
    fields.insert("candidate".into(), candidate.into());
    fields.insert("domain".into(), domain.into());
    fields.insert("label".into(), label_word(label).into());
    Example { id, fields }
}

/// "Yes" or "No": the label word V is tuned to answer.
pub fn label_word(label: bool) -> &'static str {
    if label {
        "Yes"
    } else {
        "No"
    }
}

/// A label as data may write it; `Err` says what is accepted.
pub fn parse_label(v: Option<&Value>) -> std::result::Result<bool, String> {
    let labels = ["Yes".to_string(), "No".to_string()];
    match v {
        None | Some(Value::Null) => Err("has no label; hint: every prompt row needs a label \
             (\"Yes\"/\"No\", TALLRec's \"Yes.\"/\"No.\", true/false or 1/0)"
            .into()),
        Some(v) => match crate::reward::label::parse_truth(v, &labels) {
            Ok(Some(b)) => Ok(b),
            _ => Err(format!(
                "label {v} is not one of \"Yes\"/\"No\" (a final `.` allowed, as TALLRec's \
                 \"Yes.\"), true/false or 1/0"
            )),
        },
    }
}

/// TALLRec's JSON array of `{instruction, input, output}`.
fn read_tallrec(path: &Path) -> Result<Vec<Example>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let rows: Vec<Value> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a JSON array of TALLRec rows ({{instruction, input, output}})",
            path.display()
        )
    })?;
    let name = path.display();
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let at = format!("{name} row {}", i + 1);
            let input = row
                .get("input")
                .and_then(Value::as_str)
                .with_context(|| format!("{at}: no string `input`"))?;
            let (history, domain, candidate) =
                split_tallrec_input(input).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
            let label = parse_label(row.get("output")).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
            Ok(prompt_row(
                format!("{}:{}", file_stem(path), i + 1),
                &history,
                &candidate,
                &domain,
                label,
            ))
        })
        .collect()
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// TALLRec's input → (history lines, domain, target item): the last line is
/// `Whether the user will like the target DOMAIN "ITEM"?`.
pub fn split_tallrec_input(input: &str) -> std::result::Result<(String, String, String), String> {
    const LEAD: &str = "Whether the user will like the target ";
    let (history, last) = match input.trim_end().rsplit_once('\n') {
        Some((h, l)) => (h, l.trim()),
        None => return Err("`input` has no target line".into()),
    };
    let bad = || {
        format!(
            "the last line of `input` is not `{LEAD}<domain> \"<item>\"?` (found {last:?}); \
             the target item is parsed out of it so G never sees it"
        )
    };
    let rest = last.strip_prefix(LEAD).ok_or_else(bad)?;
    let (domain, quoted) = rest.split_once(' ').ok_or_else(bad)?;
    let item = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix("\"?"))
        .ok_or_else(bad)?;
    if item.trim().is_empty() {
        return Err(bad());
    }
    Ok((history.trim().to_string(), domain.into(), item.to_string()))
}

/// Rows with `history`, `candidate`, `label` (and optionally `domain`, default "movie").
fn read_jsonl(path: &Path) -> Result<Vec<Example>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = vec![];
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let v: Value = serde_json::from_str(line).with_context(|| format!("{at}: not JSON"))?;
        let text_field = |k: &str| -> Result<String> {
            match v.get(k) {
                Some(Value::String(s)) => Ok(s.clone()),
                _ => bail!(
                    "{at}: no string `{k}`; hint: a prompt row is {{\"history\": ..., \
                     \"candidate\": ..., \"label\": \"Yes\"|\"No\"}}"
                ),
            }
        };
        let (history, candidate) = (text_field("history")?, text_field("candidate")?);
        let domain = v.get("domain").and_then(Value::as_str).unwrap_or("movie");
        let label = parse_label(v.get("label")).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
        let id = match v.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => format!("{}:{}", file_stem(path), i + 1),
        };
        out.push(prompt_row(id, &history, &candidate, domain, label));
    }
    Ok(out)
}

struct Ml100kSpec {
    max_history: usize,
    min_history: usize,
    per_user: usize,
    holdout: f64,
    split_seed: u64,
}

/// MovieLens-100K → (train, valid, test), user-disjoint.
fn read_ml100k(
    inter: &Path,
    items: &Path,
    s: &Ml100kSpec,
) -> Result<(Vec<Example>, Vec<Example>, Vec<Example>)> {
    let titles: HashMap<String, String> = crate::rec::sequences::read_atomic_items(items)?
        .into_iter()
        .map(|it| {
            let title = it.fields.get("movie_title").cloned().unwrap_or_default();
            let t = match it.fields.get("release_year").filter(|y| !y.is_empty()) {
                Some(y) => format!("{title} ({y})"),
                None => title,
            };
            (it.id, t)
        })
        .collect();
    let ratings = read_ratings(inter)?;
    let mut users: Vec<&String> = ratings.keys().collect();
    users.shuffle(&mut ChaCha8Rng::seed_from_u64(s.split_seed));
    let n_hold = ((users.len() as f64) * s.holdout).round() as usize;
    let part = |k: usize| match k {
        k if k < n_hold => 2, // test
        k if k < 2 * n_hold => 1,
        _ => 0,
    };
    let mut parts: [Vec<Example>; 3] = [vec![], vec![], vec![]];
    for (k, user) in users.iter().enumerate() {
        let seq = &ratings[*user];
        let first = seq.len().saturating_sub(s.per_user).max(s.min_history);
        for t in first..seq.len() {
            let lo = t.saturating_sub(s.max_history);
            let title = |item: &str| {
                titles
                    .get(item)
                    .cloned()
                    .unwrap_or_else(|| format!("item {item}"))
            };
            let history: Vec<String> = seq[lo..t]
                .iter()
                .map(|(item, r)| format!("\"{}\" (rated {r}/5)", title(item)))
                .collect();
            let (item, rating) = &seq[t];
            parts[part(k)].push(prompt_row(
                format!("u{user}:{t}"),
                &format!(
                    "Movies the user rated, oldest first: {}",
                    history.join(", ")
                ),
                &title(item),
                "movie",
                *rating >= 4.0,
            ));
        }
    }
    // Within a part, a stable order that does not depend on the shuffle.
    for p in &mut parts {
        p.sort_by(|a, b| a.id.cmp(&b.id));
    }
    let [train, valid, test] = parts;
    Ok((train, valid, test))
}

/// user → [(item, rating)] in time order (ties keep file order).
fn read_ratings(path: &Path) -> Result<BTreeMap<String, Vec<(String, f64)>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap_or("")
        .split('\t')
        .map(|h| h.split(':').next().unwrap_or("").to_string())
        .collect();
    let col = |name: &str| {
        header.iter().position(|h| h == name).with_context(|| {
            format!(
                "{}: no `{name}` column (header: {}); hint: a RecBole .inter with ratings",
                path.display(),
                header.join(", ")
            )
        })
    };
    let (u, i, r, t) = (
        col("user_id")?,
        col("item_id")?,
        col("rating")?,
        col("timestamp")?,
    );
    let mut by_user: BTreeMap<String, Vec<(f64, String, f64)>> = BTreeMap::new();
    for (k, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let c: Vec<&str> = line.split('\t').collect();
        let at = || format!("{} row {}", path.display(), k + 2);
        ensure!(c.len() == header.len(), "{}: wrong column count", at());
        let num = |j: usize| -> Result<f64> {
            c[j].trim()
                .parse()
                .with_context(|| format!("{}: `{}` is not a number", at(), c[j]))
        };
        by_user.entry(c[u].trim().to_string()).or_default().push((
            num(t)?,
            c[i].trim().to_string(),
            num(r)?,
        ));
    }
    Ok(by_user
        .into_iter()
        .map(|(user, mut v)| {
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            (user, v.into_iter().map(|(_, it, r)| (it, r)).collect())
        })
        .collect())
}

/// G's template must show the history and must not show the candidate or the label.
pub fn check_generator_template(t: &PromptTemplate, name: &str) -> Result<()> {
    let slots = t.slots();
    ensure!(
        slots.contains(&"history"),
        "[trackrec] generator_prompt {name:?} has no {{history}} slot (slots: {}); hint: G \
         summarizes the user's preferences from their history, e.g. prompts/trackrec_cot.txt",
        list(&slots)
    );
    if let Some(s) = slots.iter().find(|s| HIDDEN_FROM_G.contains(s)) {
        bail!(
            "[trackrec] generator_prompt {name:?} reads {{{s}}}: G must never see the candidate \
             item or the label (only V does)"
        );
    }
    Ok(())
}

/// V's template with a CoT needs the `{cot}` slot; both need the candidate.
pub fn check_validator_template(t: &PromptTemplate, name: &str, with_cot: bool) -> Result<()> {
    let slots = t.slots();
    ensure!(
        slots.contains(&"candidate") && slots.contains(&"history"),
        "[trackrec] {name:?} needs {{history}} and {{candidate}} slots (slots: {})",
        list(&slots)
    );
    ensure!(
        !with_cot || slots.contains(&"cot"),
        "[trackrec] {name:?} has no {{cot}} slot for G's summary (slots: {})",
        list(&slots)
    );
    ensure!(
        !slots.contains(&"label"),
        "[trackrec] {name:?} reads {{label}}: V would see the answer"
    );
    Ok(())
}

fn list(slots: &[&str]) -> String {
    if slots.is_empty() {
        "none".into()
    } else {
        slots.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallrec_input_splits_into_history_domain_and_target() {
        let input = "User Preference: \"A (1990)\"\nUser Unpreference: \"B\"\nWhether the user \
                     will like the target movie \"Scream (1996)\"?";
        let (h, d, t) = split_tallrec_input(input).unwrap();
        assert_eq!(h, "User Preference: \"A (1990)\"\nUser Unpreference: \"B\"");
        assert_eq!((d.as_str(), t.as_str()), ("movie", "Scream (1996)"));
        // A book title with quotes inside.
        let input = "User Preference: \nWhether the user will like the target book \"\"The \
                     Colonel\" written by P\"?";
        let (_, d, t) = split_tallrec_input(input).unwrap();
        assert_eq!(
            (d.as_str(), t.as_str()),
            ("book", "\"The Colonel\" written by P")
        );
        assert!(split_tallrec_input("no target").is_err());
        assert!(split_tallrec_input("h\nWhat about \"X\"?")
            .unwrap_err()
            .contains("last line"));
    }

    #[test]
    fn labels_in_every_accepted_spelling_and_the_rest_rejected() {
        for (v, want) in [
            (serde_json::json!("Yes."), true),
            (serde_json::json!("No."), false),
            (serde_json::json!("yes"), true),
            (serde_json::json!(1), true),
            (serde_json::json!("0"), false),
            (serde_json::json!(false), false),
        ] {
            assert_eq!(parse_label(Some(&v)), Ok(want), "{v}");
        }
        assert!(parse_label(None).unwrap_err().contains("has no label"));
        let e = parse_label(Some(&serde_json::json!("Maybe."))).unwrap_err();
        assert!(e.contains("\"Maybe.\"") && e.contains("\"Yes.\""), "{e}");
        assert!(parse_label(Some(&serde_json::json!(2))).is_err());
    }

    #[test]
    fn ml100k_splits_are_user_disjoint_and_labels_follow_ratings() {
        let dir = tempfile::tempdir().unwrap();
        let mut inter =
            String::from("user_id:token\titem_id:token\trating:float\ttimestamp:float\n");
        for u in 0..20 {
            for t in 0..6 {
                inter.push_str(&format!(
                    "{u}\t{}\t{}\t{}\n",
                    t + u % 3,
                    1 + (t + u) % 5,
                    100 * t
                ));
            }
        }
        std::fs::write(dir.path().join("x.inter"), inter).unwrap();
        std::fs::write(
            dir.path().join("x.item"),
            "item_id:token\tmovie_title:token_seq\trelease_year:token\n0\tA\t1990\n1\tB\t\n",
        )
        .unwrap();
        let src = PromptSource::Ml100k {
            inter: "x.inter".into(),
            items: "x.item".into(),
            max_history: 3,
            min_history: 2,
            per_user: 2,
            holdout: 0.2,
            split_seed: 5,
        };
        let sets = src.load(dir.path(), 0, 0, 0, 1).unwrap();
        assert_eq!(sets.validator.len(), sets.train.len());
        assert_eq!(sets.available, [24, 8, 8]);
        let user = |e: &Example| e.id.split(':').next().unwrap().to_string();
        let train: std::collections::HashSet<_> = sets.train.iter().map(user).collect();
        assert!(sets.test.iter().all(|e| !train.contains(&user(e))));
        let e = &sets.train[0];
        let h = e.text("history").unwrap();
        assert_eq!(h.matches("(rated").count(), 3, "{h}");
        assert!(h.contains("\"A (1990)\"") || h.contains("item "), "{h}");
        // u0: items t, ratings 1 + t % 5; position 5 has rating 1 → No.
        let last = sets
            .train
            .iter()
            .chain(&sets.test)
            .find(|e| e.id == "u0:5")
            .unwrap();
        assert_eq!(last.text("label").unwrap(), "No");
    }

    #[test]
    fn g_prompts_are_a_sample_of_v_prompts() {
        let dir = tempfile::tempdir().unwrap();
        let rows: String = (0..40)
            .map(|i| {
                format!(
                    "{{\"history\":\"h{i}\",\"candidate\":\"c\",\"label\":{}}}\n",
                    i % 2
                )
            })
            .collect();
        std::fs::write(dir.path().join("t.jsonl"), rows).unwrap();
        let src = PromptSource::Jsonl {
            train: "t.jsonl".into(),
            test: "t.jsonl".into(),
        };
        let ids = |v: &[Example]| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        let same = src.load(dir.path(), 8, 0, 5, 2).unwrap();
        assert_eq!(ids(&same.train), ids(&same.validator));
        assert_eq!(same.train.len(), 8);
        // Naming V's count equal to G's is the same draw.
        let named = src.load(dir.path(), 8, 8, 5, 2).unwrap();
        assert_eq!(ids(&named.validator), ids(&same.validator));
        let more = src.load(dir.path(), 8, 20, 5, 2).unwrap();
        let (g, v) = (ids(&more.train), ids(&more.validator));
        assert_eq!((g.len(), v.len()), (8, 20));
        assert!(g.iter().all(|id| v.contains(id)), "{g:?} ⊄ {v:?}");
        // Both kept in file order.
        assert!(g
            .windows(2)
            .all(|w| v.iter().position(|x| *x == w[0]) < v.iter().position(|x| *x == w[1])));
        assert_eq!(ids(&more.test), ids(&same.test));
    }

    #[test]
    fn generator_template_without_history_or_showing_the_target_is_an_error() {
        let t = PromptTemplate::parse("g", "Summarize {domain} taste.", None).unwrap();
        let e = check_generator_template(&t, "g").unwrap_err().to_string();
        assert!(e.contains("no {history} slot"), "{e}");
        let t = PromptTemplate::parse("g", "{history} and {candidate}", None).unwrap();
        let e = check_generator_template(&t, "g").unwrap_err().to_string();
        assert!(e.contains("{candidate}"), "{e}");
        let t = PromptTemplate::parse("v", "{history} {candidate}", None).unwrap();
        assert!(check_validator_template(&t, "v", true).is_err());
        assert!(check_validator_template(&t, "v", false).is_ok());
    }
}
