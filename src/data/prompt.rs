//! Prompt templates: plain-text files with `{field}` slots filled from an [`Example`].
//!
//! Syntax: `{name}` is replaced by the example's field `name` (strings as-is, numbers and bools
//! as JSON, lists as comma-separated values so `[3, 5, 7]` renders `3, 5, 7`, objects as JSON);
//! `{{` and `}}` are literal braces (`\boxed{{}}` renders `\boxed{}`), as in Python's
//! `str.format`. One trailing newline of the file is dropped, because editors add one and a
//! prompt that ends in `\n` tokenizes differently. Syntax errors are found at load time;
//! missing fields by [`PromptTemplate::validate`], before any model work.
//!
//! A template may come with a system prompt: `name.system.txt` next to `name.txt`, same syntax.
//! The built-in templates (`prompts/*.txt`) are embedded in the binary, so bare names work from
//! any directory; a file of the same name in `prompts_dir` overrides them.
//!
//! Not here: the model's chat template (applied by the model module around this text) and
//! Jinja logic; a prompt is data, not a program.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::jsonl::field_list;
use super::Example;

/// Built-in templates: `(name, user text, system text)`.
const BUILTIN: &[(&str, &str, Option<&str>)] = &[
    (
        "countdown",
        include_str!("../../prompts/countdown.txt"),
        None,
    ),
    ("gsm8k", include_str!("../../prompts/gsm8k.txt"), None),
    ("math", include_str!("../../prompts/math.txt"), None),
    ("rec_sid", include_str!("../../prompts/rec_sid.txt"), None),
    (
        "minionerec_sid",
        include_str!("../../prompts/minionerec_sid.txt"),
        None,
    ),
    (
        "minionerec_sid_rl",
        include_str!("../../prompts/minionerec_sid_rl.txt"),
        None,
    ),
    (
        "trackrec_cot",
        include_str!("../../prompts/trackrec_cot.txt"),
        None,
    ),
    (
        "trackrec_validator",
        include_str!("../../prompts/trackrec_validator.txt"),
        None,
    ),
    (
        "trackrec_validator_nocot",
        include_str!("../../prompts/trackrec_validator_nocot.txt"),
        None,
    ),
];

/// The crate's own `prompts/` directory (where the built-in templates live in the source tree).
pub fn builtin_prompts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts")
}

/// Names of the built-in templates.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _, _)| *n).collect()
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Text(String),
    Slot(String),
}

/// A parsed prompt template (user text and optional system text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptTemplate {
    /// The bare name or the path it was loaded from, for messages.
    pub name: String,
    user: Vec<Segment>,
    system: Option<Vec<Segment>>,
}

impl PromptTemplate {
    /// Load a template. A bare name (`countdown`: no path separator, no extension) is looked up
    /// as `prompts_dir/{name}.txt`, then among the built-ins; anything else is a file path, read
    /// as given (callers resolve relative paths against the recipe's directory first).
    pub fn load(name_or_path: &str, prompts_dir: &Path) -> Result<Self> {
        let is_bare = !name_or_path.is_empty()
            && !name_or_path.contains(['/', '\\'])
            && Path::new(name_or_path).extension().is_none();
        if !is_bare {
            return Self::load_file(Path::new(name_or_path));
        }
        let file = prompts_dir.join(format!("{name_or_path}.txt"));
        if file.is_file() {
            return Self::load_file(&file);
        }
        match BUILTIN.iter().find(|(n, _, _)| *n == name_or_path) {
            Some((name, user, system)) => Self::parse(name, user, *system),
            None => bail!(
                "unknown prompt template `{name_or_path}` (no {} either); built-in templates: \
                 {}; hint: use one of those, or give the path of a .txt file",
                file.display(),
                builtin_names().join(", ")
            ),
        }
    }

    /// Read `path` and, if it exists, the sibling `{stem}.system.txt`.
    fn load_file(path: &Path) -> Result<Self> {
        let user = std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading prompt template {}; hint: give a built-in name ({}) or an existing \
                 .txt file",
                path.display(),
                builtin_names().join(", ")
            )
        })?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let system_path = path.with_file_name(format!("{stem}.system.txt"));
        let system = if system_path.is_file() {
            let s = std::fs::read_to_string(&system_path)
                .with_context(|| format!("reading system prompt {}", system_path.display()))?;
            Some(s)
        } else {
            None
        };
        Self::parse(&path.display().to_string(), &user, system.as_deref())
    }

    /// Parse template text (and optional system text). `name` is used in messages only.
    pub fn parse(name: &str, user: &str, system: Option<&str>) -> Result<Self> {
        let user = parse_segments(strip_final_newline(user))
            .with_context(|| format!("in prompt template {name}"))?;
        let system = system
            .map(|s| parse_segments(strip_final_newline(s)))
            .transpose()
            .with_context(|| format!("in the system prompt of {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            user,
            system,
        })
    }

    /// Field names the template reads (user and system text), sorted, each once.
    pub fn slots(&self) -> Vec<&str> {
        let all = self.user.iter().chain(self.system.iter().flatten());
        let set: BTreeSet<&str> = all
            .filter_map(|s| match s {
                Segment::Slot(name) => Some(name.as_str()),
                Segment::Text(_) => None,
            })
            .collect();
        set.into_iter().collect()
    }

    pub fn has_system(&self) -> bool {
        self.system.is_some()
    }

    /// Check that `ex` has every field the template reads (and none of them is null).
    pub fn validate(&self, ex: &Example) -> Result<()> {
        for slot in self.slots() {
            match ex.fields.get(slot) {
                Some(Value::Null) => bail!(
                    "prompt template {} reads `{{{slot}}}`, which is null in example {}; hint: \
                     fix the dataset row",
                    self.name,
                    ex.id
                ),
                Some(_) => {}
                None => bail!(
                    "prompt template {} reads `{{{slot}}}`, but example {} has no such field; \
                     available fields: {}; hint: rename the slot, or map a field to it with \
                     `fields = {{ {slot} = \"...\" }}` in [data]",
                    self.name,
                    ex.id,
                    field_list(&ex.fields)
                ),
            }
        }
        Ok(())
    }

    /// The user prompt for `ex`.
    pub fn render(&self, ex: &Example) -> Result<String> {
        self.validate(ex)?;
        Ok(render_segments(&self.user, ex))
    }

    /// The system prompt for `ex`, if the template has one.
    pub fn render_system(&self, ex: &Example) -> Result<Option<String>> {
        self.validate(ex)?;
        Ok(self.system.as_ref().map(|s| render_segments(s, ex)))
    }
}

fn strip_final_newline(s: &str) -> &str {
    s.strip_suffix("\r\n")
        .or_else(|| s.strip_suffix('\n'))
        .unwrap_or(s)
}

/// Split template text into literal text and `{slot}`s; `{{`/`}}` are literal braces.
fn parse_segments(text: &str) -> Result<Vec<Segment>> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((pos, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                chars.next();
                lit.push('}');
            }
            '}' => bail!("unmatched `}}` at byte {pos}; hint: write `}}}}` for a literal brace"),
            '{' => {
                let rest = &text[pos + 1..];
                let Some(end) = rest.find('}') else {
                    bail!("unclosed `{{` at byte {pos}; hint: write `{{{{` for a literal brace");
                };
                let name = &rest[..end];
                if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                    bail!(
                        "`{{{name}}}` at byte {pos} is not a field slot (names are letters, \
                         digits and `_`); hint: write `{{{{` and `}}}}` for literal braces"
                    );
                }
                if !lit.is_empty() {
                    out.push(Segment::Text(std::mem::take(&mut lit)));
                }
                out.push(Segment::Slot(name.to_owned()));
                // Skip the name and the closing brace.
                for _ in 0..name.chars().count() + 1 {
                    chars.next();
                }
            }
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        out.push(Segment::Text(lit));
    }
    Ok(out)
}

/// Fill slots; `validate` has checked every slot exists.
fn render_segments(segments: &[Segment], ex: &Example) -> String {
    let mut out = String::new();
    for s in segments {
        match s {
            Segment::Text(t) => out.push_str(t),
            Segment::Slot(name) => {
                if let Some(v) = ex.fields.get(name) {
                    out.push_str(&value_text(v));
                }
            }
        }
    }
    out
}

/// How a field value reads in a prompt: lists as `a, b, c`, strings without quotes.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(scalar_text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn example(v: Value) -> Example {
        Example {
            id: "t:1".into(),
            fields: v.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn renders_slots_lists_and_escaped_braces() {
        let t = PromptTemplate::parse(
            "t",
            "Use [{nums}] to make {target}. \\boxed{{}} {{x}}\n",
            None,
        )
        .unwrap();
        let ex = example(json!({"nums": [3, 5, 7], "target": 15, "unused": "u"}));
        assert_eq!(
            t.render(&ex).unwrap(),
            "Use [3, 5, 7] to make 15. \\boxed{} {x}"
        );
        assert_eq!(t.slots(), vec!["nums", "target"]);
        let ex = example(json!({"nums": ["a", "b"], "target": true}));
        assert_eq!(
            t.render(&ex).unwrap(),
            "Use [a, b] to make true. \\boxed{} {x}"
        );
    }

    #[test]
    fn unicode_text_and_adjacent_slots() {
        let t = PromptTemplate::parse("t", "é{a}{b}→{a}", None).unwrap();
        let ex = example(json!({"a": "x", "b": 2}));
        assert_eq!(t.render(&ex).unwrap(), "éx2→x");
    }

    #[test]
    fn syntax_errors_at_parse_time() {
        for (text, want) in [
            ("a } b", "unmatched `}`"),
            ("a { b", "unclosed `{`"),
            ("a {} b", "not a field slot"),
            ("{x y}", "not a field slot"),
        ] {
            let err = format!("{:#}", PromptTemplate::parse("t", text, None).unwrap_err());
            assert!(err.contains(want) && err.contains("hint"), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_slot_names_available_fields() {
        let t = PromptTemplate::parse("t", "{question}", None).unwrap();
        let ex = example(json!({"problem": "p", "answer": "1"}));
        let err = t.validate(&ex).unwrap_err().to_string();
        assert!(err.contains("`{question}`") && err.contains("t:1"), "{err}");
        assert!(err.contains("available fields: answer, problem"), "{err}");
        assert!(t.render(&ex).is_err());
        let err = t
            .validate(&example(json!({"question": null})))
            .unwrap_err()
            .to_string();
        assert!(err.contains("null"), "{err}");
    }

    #[test]
    fn builtins_load_by_name_from_anywhere_and_render() {
        let nowhere = Path::new("/nonexistent");
        let t = PromptTemplate::load("countdown", nowhere).unwrap();
        assert_eq!(t.slots(), vec!["nums", "target"]);
        let ex = example(json!({"nums": [79, 17, 60], "target": 56}));
        let p = t.render(&ex).unwrap();
        // TinyZero's sentence, with the Python list repr of the numbers.
        assert!(p.starts_with("Using the numbers [79, 17, 60], create an equation that equals 56."));
        assert!(p.ends_with("<answer> (1 + 2) / 3 </answer>."), "{p}");
        let math = PromptTemplate::load("math", nowhere).unwrap();
        let p = math.render(&example(json!({"question": "1+1?"}))).unwrap();
        assert!(
            p.starts_with("1+1?\n\n") && p.ends_with("within \\boxed{}."),
            "{p}"
        );
        let g = PromptTemplate::load("gsm8k", nowhere).unwrap();
        assert!(g
            .render(&example(json!({"question": "q"})))
            .unwrap()
            .contains("####"));
        let err = format!("{:#}", PromptTemplate::load("nope", nowhere).unwrap_err());
        assert!(err.contains("countdown, gsm8k, math"), "{err}");
    }

    #[test]
    fn embedded_builtins_match_the_prompts_dir() {
        for name in builtin_names() {
            let from_disk =
                PromptTemplate::load_file(&builtin_prompts_dir().join(format!("{name}.txt")))
                    .unwrap();
            let embedded = PromptTemplate::load(name, Path::new("/nonexistent")).unwrap();
            assert_eq!(from_disk.user, embedded.user, "{name}");
        }
    }

    #[test]
    fn files_override_builtins_and_bring_their_system_prompt() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("countdown.txt"), "Reach {target}.\n").unwrap();
        std::fs::write(dir.path().join("countdown.system.txt"), "Numbers: {nums}\n").unwrap();
        let t = PromptTemplate::load("countdown", dir.path()).unwrap();
        let ex = example(json!({"nums": [1, 2], "target": 3}));
        assert_eq!(t.render(&ex).unwrap(), "Reach 3.");
        assert_eq!(
            t.render_system(&ex).unwrap().as_deref(),
            Some("Numbers: 1, 2")
        );
        // A path is read as given.
        let path = dir.path().join("countdown.txt");
        let t = PromptTemplate::load(path.to_str().unwrap(), Path::new("/nonexistent")).unwrap();
        assert!(t.has_system());
        let err = format!(
            "{:#}",
            PromptTemplate::load("/no/such.txt", dir.path()).unwrap_err()
        );
        assert!(
            err.contains("/no/such.txt") && err.contains("hint"),
            "{err}"
        );
    }
}
