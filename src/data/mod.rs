//! Datasets: rows become [`Example`]s that prompt templates and verifiers read by field name.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One dataset row. Every field of the source record is kept as JSON, so a prompt template
/// (`{question}`) or a verifier (ground truth in `answer`, Countdown's `nums`/`target`) can read
/// any of them without the loader knowing which.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// Stable identifier (source file + line, or generator seed + index).
    pub id: String,
    pub fields: Map<String, Value>,
}

impl Example {
    /// A field rendered as text: strings as-is, numbers/bools/arrays as their JSON text.
    pub fn text(&self, key: &str) -> Option<String> {
        self.fields.get(key).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

pub mod countdown;
pub mod cursor;
pub mod jsonl;
pub mod math;
pub mod preference;
pub mod prompt;
pub mod table;

pub use countdown::{countdown_completion, solve, CountdownConfig};
pub use cursor::DataCursor;
pub use jsonl::JsonlConfig;
pub use math::{Gsm8kConfig, MathConfig};
pub use prompt::PromptTemplate;

use std::path::Path;

use anyhow::{bail, Result};

/// A recipe's `[data]` table, tagged by `source`. Every variant rejects unknown keys, so a typo
/// fails at recipe load with serde's "unknown field `x`, expected ..." message.
///
/// Every `path` may be a local file (JSON Lines, or Parquet when it ends in `.parquet`) or a hub
/// dataset `hf://datasets/OWNER/NAME[@REVISION]/GLOB` ([`table`]). `limit` and `shuffle` belong
/// to the trainer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum DataConfig {
    /// Any JSON Lines file, with optional field renames.
    Jsonl(JsonlConfig),
    /// Any Parquet file(s) — local or `hf://datasets/...` — with optional field renames.
    Parquet(JsonlConfig),
    /// Generated Countdown problems (train and eval use different seeds; see `countdown`).
    Countdown(CountdownConfig),
    /// GSM8K JSONL: `answer` becomes the `####` gold number, the worked text `solution`.
    Gsm8k(Gsm8kConfig),
    /// MATH-style JSONL (MATH-500, AIME 2024): `problem` becomes `question`.
    Math(MathConfig),
    /// `{prompt, chosen, rejected}` rows (TRL's preference format) for DPO / S-DPO, validated at
    /// load; JSON Lines or Parquet like `jsonl`.
    Preference(preference::PreferenceConfig),
    /// Next-item examples from an interaction log with Semantic-ID targets (`rec::dataset`).
    Rec(crate::rec::dataset::RecDataConfig),
}

/// Load the examples `cfg` describes; relative paths are resolved against `base_dir` (the
/// recipe's directory). An empty dataset is an error.
pub fn load(cfg: &DataConfig, base_dir: &Path) -> Result<Vec<Example>> {
    let examples = match cfg {
        DataConfig::Jsonl(c) | DataConfig::Parquet(c) => c.load(base_dir)?,
        DataConfig::Countdown(c) => c.examples()?,
        DataConfig::Gsm8k(c) => c.load(base_dir)?,
        DataConfig::Math(c) => c.load(base_dir)?,
        DataConfig::Preference(c) => c.load(base_dir)?,
        DataConfig::Rec(c) => c.load(base_dir)?,
    };
    if examples.is_empty() {
        bail!("{}", cfg.empty_message(base_dir));
    }
    Ok(examples)
}

/// Run `check` on every row; the error names the first bad row and how many rows fail, so a
/// dataset is validated whole when a recipe is resolved rather than row by row during training.
pub fn check_rows<'a>(
    rows: impl Iterator<Item = &'a Example>,
    check: impl Fn(&Example) -> Result<()>,
) -> Result<()> {
    let (mut first, mut bad, mut total) = (None, 0usize, 0usize);
    for ex in rows {
        total += 1;
        if let Err(e) = check(ex) {
            bad += 1;
            first.get_or_insert((ex.id.clone(), e));
        }
    }
    match first {
        None => Ok(()),
        Some((id, e)) => Err(e.context(format!(
            "row {id} is the first bad row ({bad} of {total} rows fail this check)"
        ))),
    }
}

impl DataConfig {
    /// What to tell a user whose dataset came out empty, in plain words.
    fn empty_message(&self, base_dir: &Path) -> String {
        let path = match self {
            Self::Countdown(c) => {
                return format!(
                    "the Countdown generator made no problems (count = {}); hint: set `count` \
                     to the number of problems you want",
                    c.count
                )
            }
            Self::Jsonl(c) | Self::Parquet(c) => &c.path,
            Self::Gsm8k(c) => &c.path,
            Self::Math(c) => &c.path,
            Self::Preference(c) => &c.path,
            Self::Rec(c) => {
                return format!(
                    "the interaction log made no examples for part {:?} (max_users = {}); hint: \
                     check the log's path and that its users have enough interactions for the split",
                    c.part, c.max_users
                )
            }
        };
        let shown = if path.to_string_lossy().contains("://") {
            path.display().to_string()
        } else {
            base_dir.join(path).display().to_string()
        };
        format!(
            "the dataset {shown} has no rows; hint: point `path` at a file with at least one \
             record (JSON Lines: one object per line)"
        )
    }

    /// The reference completion of `ex` (SFT's target), from where this source keeps it:
    /// `completion` for JSONL/Parquet (map another column with `fields`), the worked `solution`
    /// for GSM8K and MATH, a generated solution for Countdown. An error names the missing field.
    pub fn reference_completion(&self, ex: &Example) -> Result<String> {
        let field = match self {
            Self::Countdown(_) => {
                return countdown_completion(ex).ok_or_else(|| {
                    anyhow::anyhow!(
                        "Countdown example {} has no solvable `nums`/`target`",
                        ex.id
                    )
                })
            }
            Self::Jsonl(_) | Self::Parquet(_) => "completion",
            Self::Gsm8k(_) | Self::Math(_) => "solution",
            // SFT on preference data imitates the chosen completion (TRL's DPO "sft" warm start).
            Self::Preference(_) => "chosen",
            // The target item's SID string (`<a_1><b_2><c_3>`).
            Self::Rec(_) => "target",
        };
        ex.text(field).ok_or_else(|| {
            anyhow::anyhow!(
                "example {} has no `{field}` field, the reference completion this source reads; \
                 available fields: {}; hint: map a column onto it with `fields = {{ {field} = \"...\" }}` \
                 in [data]",
                ex.id,
                ex.fields.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Recipe {
        data: DataConfig,
    }

    fn parse(toml_text: &str) -> std::result::Result<DataConfig, String> {
        toml::from_str::<Recipe>(toml_text)
            .map(|r| r.data)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn recipe_tables_parse_into_variants() {
        let c = parse("[data]\nsource = \"countdown\"\nseed = 1\ncount = 5\nnum_operands = [3]\n")
            .unwrap();
        let DataConfig::Countdown(c) = c else {
            panic!("{c:?}")
        };
        assert_eq!((c.seed, c.count, c.num_operands.clone()), (1, 5, vec![3]));
        assert_eq!((c.min_number, c.max_number, c.max_target), (1, 99, 100));
        let c = parse(
            "[data]\nsource = \"jsonl\"\npath = \"x.jsonl\"\nfields = { question = \"problem\" }\n",
        )
        .unwrap();
        assert!(matches!(c, DataConfig::Jsonl(ref j) if j.fields["question"] == "problem"));
        let c = parse("data = { source = \"gsm8k\", path = \"t.jsonl\" }").unwrap();
        assert!(matches!(c, DataConfig::Gsm8k(_)));
        let c = parse("data = { source = \"math\", path = \"t.jsonl\" }").unwrap();
        assert!(matches!(c, DataConfig::Math(_)));
    }

    #[test]
    fn unknown_keys_and_sources_are_rejected() {
        let err = parse("data = { source = \"countdown\", seeds = 1 }").unwrap_err();
        assert!(err.contains("unknown field `seeds`"), "{err}");
        let err = parse("data = { source = \"arrow\", path = \"x\" }").unwrap_err();
        assert!(err.contains("unknown variant `arrow`"), "{err}");
        assert!(err.contains("parquet"), "the valid names are listed: {err}");
        let err = parse("data = { source = \"gsm8k\" }").unwrap_err();
        assert!(err.contains("missing field `path`"), "{err}");
    }

    #[test]
    fn load_dispatches_and_resolves_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("d.jsonl"), "{\"q\": \"hi\"}\n").unwrap();
        let cfg = parse("data = { source = \"jsonl\", path = \"d.jsonl\" }").unwrap();
        let ex = load(&cfg, dir.path()).unwrap();
        assert_eq!(ex[0].text("q").unwrap(), "hi");
        let cd = DataConfig::Countdown(CountdownConfig {
            count: 4,
            ..Default::default()
        });
        let ex = load(&cd, dir.path()).unwrap();
        assert_eq!(ex.len(), 4);
        // Generated examples render with the built-in template.
        let t = PromptTemplate::load("countdown", dir.path()).unwrap();
        t.validate(&ex[0]).unwrap();
        assert!(countdown_completion(&ex[0]).is_some());
        std::fs::write(dir.path().join("e.jsonl"), "\n").unwrap();
        let cfg = parse("data = { source = \"jsonl\", path = \"e.jsonl\" }").unwrap();
        let e = load(&cfg, dir.path()).unwrap_err().to_string();
        // Plain words naming the file, not the config's debug text.
        assert!(
            e.contains("e.jsonl has no rows") && !e.contains("JsonlConfig"),
            "{e}"
        );
        let cd = DataConfig::Countdown(CountdownConfig {
            count: 0,
            ..Default::default()
        });
        let e = load(&cd, dir.path()).unwrap_err().to_string();
        assert!(e.contains("made no problems (count = 0)"), "{e}");
    }

    #[test]
    fn each_source_declares_its_reference_completion() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("d.jsonl"),
            "{\"q\": \"hi\", \"completion\": \"hello\"}\n{\"q\": \"x\"}\n",
        )
        .unwrap();
        let cfg = parse("data = { source = \"jsonl\", path = \"d.jsonl\" }").unwrap();
        let ex = load(&cfg, dir.path()).unwrap();
        assert_eq!(cfg.reference_completion(&ex[0]).unwrap(), "hello");
        let e = cfg.reference_completion(&ex[1]).unwrap_err().to_string();
        assert!(e.contains("`completion`") && e.contains("q"), "{e}");
        let cd = DataConfig::Countdown(CountdownConfig {
            count: 2,
            ..Default::default()
        });
        let ex = load(&cd, dir.path()).unwrap();
        assert_eq!(
            cd.reference_completion(&ex[0]).unwrap(),
            countdown_completion(&ex[0]).unwrap()
        );
    }

    #[test]
    fn parquet_source_maps_fields_like_jsonl() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data");
        let cfg = parse(
            "data = { source = \"parquet\", path = \"toy_zstd.parquet\", \
             fields = { prompt = \"question\" } }",
        )
        .unwrap();
        let ex = load(&cfg, &fixtures).unwrap();
        assert_eq!(ex.len(), 3);
        assert_eq!(ex[0].text("prompt").unwrap(), "What is 2 + 3?");
        // gsm8k/math sources read Parquet paths too.
        let cfg = parse("data = { source = \"math\", path = \"toy_snappy.parquet\" }").unwrap();
        assert!(load(&cfg, &fixtures).is_err_and(|e| format!("{e:#}").contains("problem")));
    }
}
