//! Math verifier: extract the final answer of a completion and compare it with the ground truth,
//! by value when both are numbers, else as normalized LaTeX text.
//!
//! Extraction takes whichever comes last in the text: the last `\boxed{...}` / `\fbox{...}`
//! (balanced braces) or the last `#### answer` line (GSM8K style); optionally, with
//! `fallback_last_number`, the last number in the text. The ground truth field goes through the
//! same extraction (a GSM8K `answer` is a solution ending in `#### 72`) and is used whole when
//! nothing is found (MATH-500 and AIME store the bare answer).
//!
//! Normalization follows the spirit of Hendrycks et al.'s MATH `strip_string` (also used by
//! verl's `math.py` scorer): drop `$`, spacing commands, `\left`/`\right`, degrees, percent
//! signs, `\text{...}` units, thousands separators, a short `x =` prefix and whitespace; unify
//! `\dfrac`/`\tfrac`/`\frac12`. Numbers, fractions (`\frac{a}{b}`, `a/b`) and `\sqrt{n}`,
//! `k\sqrt{n}` are compared as f64 with relative tolerance 1e-6, so `0.5` = `\frac{1}{2}` and
//! `025` = `25`.
//!
//! Deliberately not here: symbolic equivalence (`2(x+1)` vs `2x+2`), intervals, matrices,
//! unordered sets; those compare as text. Use an external verifier wrapping `math_verify` when
//! that matters.

use anyhow::{ensure, Context};
use serde::{Deserialize, Serialize};

use super::{Score, Verifier};
use crate::data::Example;

/// `[verifier] name = "math"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MathConfig {
    /// Example field with the ground truth: a bare answer or a solution with `####`/`\boxed`.
    pub answer_field: String,
    /// Score of an extractable but wrong answer (a format reward); 0 by default.
    pub format_score: f32,
    /// When neither `\boxed` nor `####` is present, take the last number in the completion.
    /// Off by default: it rewards answers the model did not commit to.
    pub fallback_last_number: bool,
}

impl Default for MathConfig {
    fn default() -> Self {
        MathConfig {
            answer_field: "answer".into(),
            format_score: 0.0,
            fallback_last_number: false,
        }
    }
}

/// Parts: `format` is 1 when an answer was extracted, `correct` is 1 when it matches.
///
/// ```
/// use llmrl::data::Example;
/// use llmrl::reward::{MathConfig, MathVerifier, Verifier};
/// let ex: Example = serde_json::from_str(r#"{"id":"0","fields":{"answer":"\\frac{1}{2}"}}"#)?;
/// let v = MathVerifier::new(&MathConfig::default())?;
/// assert_eq!(v.score(&ex, "so $\\boxed{0.5}$").value, 1.0);
/// assert_eq!(v.score(&ex, "#### 1/2").value, 1.0);
/// assert_eq!(v.score(&ex, "\\boxed{\\dfrac{1}{3}}").value, 0.0);
/// assert_eq!(v.score(&ex, "the answer is 0.5").value, 0.0); // nothing extractable
/// # anyhow::Ok(())
/// ```
#[derive(Clone, Debug)]
pub struct MathVerifier {
    cfg: MathConfig,
}

/// Relative tolerance for numeric equality.
const REL_TOL: f64 = 1e-6;

impl MathVerifier {
    pub fn new(cfg: &MathConfig) -> anyhow::Result<Self> {
        ensure!(
            (0.0..1.0).contains(&cfg.format_score),
            "math format_score = {} must be in [0, 1)",
            cfg.format_score
        );
        Ok(MathVerifier { cfg: cfg.clone() })
    }

    fn ground_truth(&self, example: &Example) -> Result<String, String> {
        let field = &self.cfg.answer_field;
        let raw = example
            .text(field)
            .ok_or_else(|| format!("has no field `{field}`"))?;
        let gold = extract(&raw, false).unwrap_or(raw);
        let gold = normalize(&gold);
        if gold.is_empty() {
            return Err(format!("field `{field}` holds an empty answer"));
        }
        Ok(gold)
    }
}

impl Verifier for MathVerifier {
    fn score(&self, example: &Example, completion: &str) -> Score {
        let gold = match self.ground_truth(example) {
            Ok(g) => g,
            Err(e) => return Score::zero(format!("example {} {e}", example.id)),
        };
        let Some(raw) = extract(completion, self.cfg.fallback_last_number) else {
            return Score::zero("no \\boxed{...} or #### answer");
        };
        let pred = normalize(&raw);
        if pred.is_empty() {
            return Score::zero("the extracted answer is empty");
        }
        let correct = equivalent(&pred, &gold);
        Score {
            value: if correct { 1.0 } else { self.cfg.format_score },
            correct,
            parts: vec![
                ("format".into(), 1.0),
                ("correct".into(), if correct { 1.0 } else { 0.0 }),
            ],
            reason: if correct {
                format!("answer {pred} matches")
            } else {
                format!("answer {pred}, expected {gold}")
            },
            answer: Some(canonical_answer(&pred)),
        }
    }

    fn name(&self) -> &str {
        "math"
    }

    fn validate(&self, example: &Example) -> anyhow::Result<()> {
        self.ground_truth(example)
            .map(|_| ())
            .map_err(anyhow::Error::msg)
            .with_context(|| {
                format!(
                    "math example {}; hint: set answer_field to the dataset's ground-truth field",
                    example.id
                )
            })
    }
}

/// The final answer in `text`: whichever of the last complete `\boxed{}`/`\fbox{}` and the last
/// `####` line starts later; else, if asked, the last number.
fn extract(text: &str, fallback_last_number: bool) -> Option<String> {
    let boxed = last_boxed(text);
    let hashes = text.rfind("####").and_then(|i| {
        let rest = &text[i + 4..];
        let line = rest.lines().next().unwrap_or("").trim();
        (!line.is_empty()).then(|| (i, line.to_string()))
    });
    let found = match (boxed, hashes) {
        (Some(b), Some(h)) => Some(if b.0 > h.0 { b.1 } else { h.1 }),
        (b, h) => b.or(h).map(|(_, s)| s),
    };
    found.or_else(|| fallback_last_number.then(|| last_number(text)).flatten())
}

/// (start, content) of the last `\boxed`/`\fbox` whose argument is complete. Accepts
/// `\boxed{...}` with nested braces and the bare `\boxed 5` form.
fn last_boxed(text: &str) -> Option<(usize, String)> {
    let mut starts: Vec<(usize, usize)> = ["\\boxed", "\\fbox"]
        .iter()
        .flat_map(|cmd| text.match_indices(cmd).map(|(i, m)| (i, i + m.len())))
        .collect();
    starts.sort_unstable();
    starts.into_iter().rev().find_map(|(start, after)| {
        let rest = &text[after..];
        if let Some((content, _)) = brace_group(rest.trim_start()) {
            return Some((start, content.to_string()));
        }
        // `\boxed 5`: a space, then the token up to whitespace or `$`.
        let token = rest.strip_prefix(' ')?.trim_start();
        let end = token
            .find(|c: char| c.is_whitespace() || c == '$')
            .unwrap_or(token.len());
        (end > 0).then(|| (start, token[..end].to_string()))
    })
}

/// If `s` starts with `{`, the content of that balanced group and the text after it.
fn brace_group(s: &str) -> Option<(&str, &str)> {
    if !s.starts_with('{') {
        return None;
    }
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some((&s[1..i], &s[i + 1..]));
                }
            }
            _ => {}
        }
    }
    None
}

/// The last `-?digits[,digits]*[.digits]` in `text`.
fn last_number(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut end = b.len();
    while end > 0 && !b[end - 1].is_ascii_digit() {
        end -= 1;
    }
    if end == 0 {
        return None;
    }
    let mut start = end;
    while start > 0
        && (b[start - 1].is_ascii_digit() || b[start - 1] == b',' || b[start - 1] == b'.')
    {
        start -= 1;
    }
    // Trim separators that belong to the sentence ("so, 12" or ".5" stays as-is).
    while start < end && b[start] == b',' {
        start += 1;
    }
    if start > 0 && b[start - 1] == b'-' {
        start -= 1;
    }
    Some(text[start..end].to_string())
}

/// Normalizes a LaTeX answer so that equal answers are equal strings (see the module docs).
pub(crate) fn normalize(s: &str) -> String {
    let mut s = s.trim().to_string();
    for (from, to) in [
        ("\\$", ""),
        ("$", ""),
        ("\\dfrac", "\\frac"),
        ("\\tfrac", "\\frac"),
        ("\\left", ""),
        ("\\right", ""),
        ("\\displaystyle", ""),
        ("\\!", ""),
        ("\\,", ""),
        ("\\;", ""),
        ("\\:", ""),
        ("~", ""),
        ("^{\\circ}", ""),
        ("^\\circ", ""),
        ("°", ""),
        ("\\%", ""),
        ("%", ""),
    ] {
        s = s.replace(from, to);
    }
    for cmd in ["\\mathbf", "\\boldsymbol"] {
        s = unwrap_command(&s, cmd);
    }
    s = strip_text_units(&s);
    s.retain(|c| !c.is_whitespace());
    s = fix_shorthand(&s, "\\frac", 2);
    s = fix_shorthand(&s, "\\sqrt", 1);
    // "x=5", "k=-2": a short left-hand side names the variable, it is not part of the answer.
    if let Some((lhs, rhs)) = s.split_once('=') {
        if lhs.chars().count() <= 2 && !rhs.contains('=') && !rhs.is_empty() {
            s = rhs.to_string();
        }
    }
    while s.ends_with('.') {
        s.pop();
    }
    if is_grouped_thousands(&s) {
        s.retain(|c| c != ',');
    }
    s
}

/// `\mathbf{127}` → `127`: formatting that is not part of the answer.
fn unwrap_command(s: &str, cmd: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(cmd) {
        out.push_str(&rest[..i]);
        let after = &rest[i + cmd.len()..];
        match brace_group(after) {
            Some((content, tail)) => {
                out.push_str(content);
                rest = tail;
            }
            None => {
                out.push_str(cmd);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `\text{...}` (and `\textbf`, `\mbox`, `\mathrm`) groups are units when there is something
/// else (`5.4 \text{ cents}` → `5.4`, with a following `^2`) and the answer itself otherwise
/// (`\text{Evelyn}` → `Evelyn`).
fn strip_text_units(s: &str) -> String {
    let mut without = String::new();
    let mut unwrapped = String::new();
    let mut rest = s;
    loop {
        let next = ["\\text", "\\mbox", "\\mathrm"]
            .iter()
            .filter_map(|cmd| rest.find(cmd).map(|i| (i, cmd.len())))
            .min();
        let Some((i, len)) = next else { break };
        // `\textbf{...}`, `\textit{...}`: skip the letters after `\text`.
        let after = rest[i + len..].trim_start_matches(|c: char| c.is_ascii_alphabetic());
        let Some((content, tail)) = brace_group(after) else {
            without.push_str(&rest[..i + len]);
            unwrapped.push_str(&rest[..i + len]);
            rest = &rest[i + len..];
            continue;
        };
        without.push_str(&rest[..i]);
        unwrapped.push_str(&rest[..i]);
        unwrapped.push_str(content);
        rest = tail;
        // A unit's power: `\text{cm}^2`.
        for power in ["^2", "^3", "^{2}", "^{3}"] {
            if let Some(t) = rest.strip_prefix(power) {
                unwrapped.push_str(power);
                rest = t;
                break;
            }
        }
    }
    without.push_str(rest);
    unwrapped.push_str(rest);
    if without.trim().is_empty() {
        unwrapped
    } else {
        without
    }
}

/// `\frac12` → `\frac{1}{2}`, `\sqrt3` → `\sqrt{3}`: give each of the `args` arguments of `cmd`
/// braces when it is a single character or a command name.
fn fix_shorthand(s: &str, cmd: &str, args: usize) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(cmd) {
        out.push_str(&rest[..i + cmd.len()]);
        rest = &rest[i + cmd.len()..];
        for _ in 0..args {
            if let Some((content, tail)) = brace_group(rest) {
                out.push('{');
                out.push_str(content);
                out.push('}');
                rest = tail;
                continue;
            }
            let mut chars = rest.char_indices();
            let end = match chars.next() {
                Some((_, '\\')) => chars
                    .find(|(_, c)| !c.is_ascii_alphabetic())
                    .map_or(rest.len(), |(j, _)| j),
                Some((_, c)) if c != '}' => c.len_utf8(),
                _ => break,
            };
            out.push('{');
            out.push_str(&rest[..end]);
            out.push('}');
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// `1,234` and `-12,345,678.5`: commas every three digits from the decimal point.
fn is_grouped_thousands(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let int = s.split_once('.').map_or(s, |(i, f)| {
        if f.chars().all(|c| c.is_ascii_digit()) {
            i
        } else {
            ""
        }
    });
    let groups: Vec<&str> = int.split(',').collect();
    groups.len() > 1
        && (1..=3).contains(&groups[0].len())
        && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_digit()))
        && groups[1..].iter().all(|g| g.len() == 3)
}

/// The value of a normalized answer that is a number, fraction or simple square root.
fn value(s: &str) -> Option<f64> {
    value_at(s, 0).filter(|v| v.is_finite())
}

fn value_at(s: &str, depth: usize) -> Option<f64> {
    // Bounded so that "------1" or deeply nested fractions cannot exhaust the stack.
    if depth > 8 || s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('-') {
        return value_at(rest, depth + 1).map(|v| -v);
    }
    if let Some(rest) = s.strip_prefix('+') {
        return value_at(rest, depth + 1);
    }
    if let Some(v) = decimal(s) {
        return Some(v);
    }
    // "(113)": a parenthesized number (AIME solutions write these).
    if let Some(inner) = s.strip_prefix('(').and_then(|t| t.strip_suffix(')')) {
        return value_at(inner, depth + 1);
    }
    if let Some(rest) = s.strip_prefix("\\frac") {
        let (num, rest) = brace_group(rest)?;
        let (den, rest) = brace_group(rest)?;
        if !rest.is_empty() {
            return None;
        }
        let den = value_at(den, depth + 1)?;
        return (den != 0.0).then_some(value_at(num, depth + 1)? / den);
    }
    if let Some(i) = s.find("\\sqrt") {
        let coef = if i == 0 { 1.0 } else { decimal(&s[..i])? };
        let (arg, rest) = brace_group(&s[i + 5..])?;
        let arg = value_at(arg, depth + 1)?;
        return (rest.is_empty() && arg >= 0.0).then(|| coef * arg.sqrt());
    }
    if let Some((num, den)) = s.split_once('/') {
        let den = value_at(den, depth + 1)?;
        return (den != 0.0).then_some(value_at(num, depth + 1)? / den);
    }
    None
}

/// Plain decimal: digits with at most one `.`, at least one digit (`.5` and `5.` included).
fn decimal(s: &str) -> Option<f64> {
    let digits = s.chars().filter(char::is_ascii_digit).count();
    let dots = s.chars().filter(|&c| c == '.').count();
    (digits > 0 && dots <= 1 && digits + dots == s.len())
        .then(|| s.parse().ok())
        .flatten()
}

fn equivalent(pred: &str, gold: &str) -> bool {
    match (value(pred), value(gold)) {
        (Some(a), Some(b)) => (a - b).abs() <= REL_TOL * a.abs().max(b.abs()),
        _ => pred == gold,
    }
}

/// The string used for majority voting: numbers in one spelling (`0.5`, `\frac{1}{2}`, `1/2` →
/// `0.5`; `025` → `25`), other answers as normalized.
fn canonical_answer(norm: &str) -> String {
    match value(norm) {
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{}", v as i64),
        Some(v) => format!("{v}"),
        None => norm.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn example(answer: serde_json::Value) -> Example {
        let mut fields = serde_json::Map::new();
        fields.insert("answer".into(), answer);
        Example {
            id: "t".into(),
            fields,
        }
    }

    #[test]
    fn score_table() {
        let v = MathVerifier::new(&MathConfig::default()).unwrap();
        // (ground truth, completion, correct)
        let cases = [
            (
                "Janet sells 9 eggs.\n#### 18",
                "so she makes 18 dollars\n#### 18",
                true,
            ),
            ("#### 1234", "#### 1,234", true),
            ("#### 1234", "#### $1,234.", true),
            ("#### 1234", "#### 1234.00", true),
            ("#### 72", "The answer is #### 72 dollars", false),
            ("0.5", "\\boxed{\\frac{1}{2}}", true),
            ("\\frac{1}{2}", "thus $\\boxed{0.5}$.", true),
            ("\\frac12", "\\boxed{1/2}", true),
            ("\\frac{3}{4}", "\\boxed{\\dfrac{3}{4}}", true),
            ("\\frac{3}{4}", "\\boxed{\\tfrac34}", true),
            ("-\\frac{3}{4}", "\\boxed{-0.75}", true),
            ("\\frac{3}{4}", "\\boxed{\\frac{4}{3}}", false),
            ("025", "\\boxed{25}", true),
            ("5.4 \\text{ cents}", "\\boxed{5.4}", true),
            ("5.4", "\\boxed{5.4\\text{ cents}}", true),
            ("24", "\\boxed{24 \\mathrm{cm}^2}", true),
            ("90^\\circ", "\\boxed{90}", true),
            ("10\\%", "\\boxed{10\\%}", true),
            ("11,\\! 111,\\! 111,\\! 100", "\\boxed{11111111100}", true),
            ("58,500", "\\boxed{58500}", true),
            ("\\sqrt{51}", "\\boxed{\\sqrt{51}}", true),
            ("\\sqrt{3}", "\\boxed{\\sqrt3}", true),
            ("\\sqrt{51}", "\\boxed{\\sqrt51}", false),
            ("2\\sqrt{113}", "\\boxed{2 \\sqrt{113}}", true),
            ("\\frac{\\sqrt{3}}{2}", "\\boxed{\\frac{\\sqrt3}{2}}", true),
            (
                "\\left( 3, \\frac{\\pi}{2} \\right)",
                "\\boxed{(3,\\frac{\\pi}{2})}",
                true,
            ),
            (
                "\\left( 3, \\frac{\\pi}{2} \\right)",
                "\\boxed{(3,\\frac\\pi2)}",
                true,
            ),
            ("(1,-16,-4,43)", "\\boxed{(1, -16, -4, 43)}", true),
            ("-2 + 7i", "\\boxed{-2+7i}", true),
            ("\\text{Evelyn}", "\\boxed{\\text{Evelyn}}", true),
            ("\\text{Evelyn}", "\\boxed{Evelyn}", true),
            ("3", "\\boxed{x = 3}", true),
            ("2k+2", "\\boxed{2k+2}", true),
            ("127", "\\boxed{\\mathbf{127}}", true),
            ("073", "\\boxed{(73)}", true),
            ("(1,2)", "\\boxed{(1,3)}", false),
            // Nested braces and the last box wins.
            (
                "\\frac{1}{2}",
                "\\boxed{3} no, \\boxed{\\frac{1}{{2}}}",
                false,
            ),
            ("\\frac{1}{2}", "\\boxed{3} no, \\fbox{\\frac{1}{2}}", true),
            (
                "\\frac{1}{2}",
                "\\boxed{\\frac{1}{2}} then \\boxed{\\frac{1}{",
                true,
            ),
            ("7", "\\boxed 7", true),
            // #### and \boxed: the later one counts.
            ("7", "\\boxed{3}\n#### 7", true),
            ("7", "#### 7\n\\boxed{3}", false),
            // No answer, empty answer, division by zero in a fraction.
            ("7", "the answer is 7", false),
            ("7", "\\boxed{}", false),
            ("7", "####   \n", false),
            ("1", "\\boxed{1/0}", false),
            ("", "", false),
        ];
        for (gold, completion, correct) in cases {
            let s = v.score(&example(json!(gold)), completion);
            assert_eq!(
                s.correct, correct,
                "{gold:?} vs {completion:?}: {}",
                s.reason
            );
            assert_eq!(s.value, if correct { 1.0 } else { 0.0 });
        }
    }

    #[test]
    fn numeric_ground_truth_and_format_score() {
        let cfg = MathConfig {
            format_score: 0.1,
            ..MathConfig::default()
        };
        let v = MathVerifier::new(&cfg).unwrap();
        let ex = example(json!(72));
        assert_eq!(v.score(&ex, "\\boxed{72}").value, 1.0);
        let wrong = v.score(&ex, "\\boxed{71}");
        assert_eq!((wrong.value, wrong.correct), (0.1, false));
        assert_eq!(wrong.parts[0], ("format".into(), 1.0));
        assert_eq!(v.score(&ex, "71").value, 0.0);
    }

    #[test]
    fn fallback_last_number_is_opt_in() {
        let ex = example(json!("#### -1234.5"));
        let text = "So the total is -1,234.5.";
        let off = MathVerifier::new(&MathConfig::default()).unwrap();
        assert!(!off.score(&ex, text).correct);
        let on = MathVerifier::new(&MathConfig {
            fallback_last_number: true,
            ..MathConfig::default()
        })
        .unwrap();
        assert!(on.score(&ex, text).correct);
        assert!(!on.score(&ex, "no numbers here").correct);
    }

    #[test]
    fn answers_for_voting_are_canonical() {
        let v = MathVerifier::new(&MathConfig::default()).unwrap();
        let ex = example(json!("1/2"));
        let answer = |c: &str| v.score(&ex, c).answer;
        assert_eq!(answer("\\boxed{\\frac{1}{2}}"), answer("\\boxed{0.50}"));
        assert_eq!(answer("\\boxed{025}").as_deref(), Some("25"));
        assert_eq!(answer("\\boxed{ 2k + 2 }").as_deref(), Some("2k+2"));
        assert_eq!(answer("nothing"), None);
    }

    #[test]
    fn missing_ground_truth_scores_zero_and_fails_validation() {
        let v = MathVerifier::new(&MathConfig::default()).unwrap();
        let ex = Example::default();
        assert_eq!(v.score(&ex, "\\boxed{1}").value, 0.0);
        let err = format!("{:#}", v.validate(&ex).unwrap_err());
        assert!(err.contains("answer_field"), "{err}");
        assert!(v.validate(&example(json!("#### 3"))).is_ok());
    }

    #[test]
    fn pathological_input_does_not_panic() {
        let v = MathVerifier::new(&MathConfig::default()).unwrap();
        let ex = example(json!("1"));
        let deep = format!(
            "\\boxed{{{}1{}}}",
            "\\frac{".repeat(500),
            "}{1}".repeat(500)
        );
        for c in [
            deep.as_str(),
            "\\boxed{--------------------------1}",
            "\\boxed{}}}}",
            "\\boxed{{{{",
            "\\boxed",
            "\\frac",
            "\\boxed{\\sqrt{-1}}",
            "\\boxed{1e999}",
            "\\boxed{١}",
            "#### ",
        ] {
            let _ = v.score(&ex, c);
        }
    }
}
