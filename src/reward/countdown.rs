//! Countdown verifier: is the equation in the last `<answer>` tag made of the given numbers, each
//! used exactly once, and does it evaluate to the target?
//!
//! Follows TinyZero `verl/utils/reward_score/countdown.py::compute_score` (as used by ROVER and
//! i-MENTOR; see `design/reference/rover_imentor.md` §3.3) with these deliberate differences:
//! - The equation is evaluated by our own recursive-descent parser, never by an interpreter. It
//!   accepts ASCII digits, `+ - * / ( )` (binary and unary `+`/`-`) and ASCII whitespace only, so
//!   Python's `**` and `//` (which TinyZero's `eval` accepts), `^`, `.`, letters and Unicode digits
//!   or operators make an equation invalid.
//! - `format_score` goes only to a *parseable* equation that is wrong (numbers not used exactly
//!   once, division by zero, overflow, wrong value). TinyZero also gives it to any text inside the
//!   tag (`<answer>hello</answer>`, `<answer>90 x 25</answer>`, even `<answer></answer>`); we give
//!   0 there by default, which closes a free-reward shortcut. `format_rule = "tinyzero"`
//!   reproduces the papers' rule, so results can be compared with their numbers; every recipe
//!   and result says which rule it used.
//! - By default the last `<answer>...</answer>` anywhere in the completion counts. TinyZero looks
//!   only at the last line of prompt+response (an answer followed by a newline scores 0); set
//!   `last_line_only = true` to reproduce that.
//!
//! Numbers are compared as integers: the multiset of number literals must equal `nums`. Values
//! are computed in f64 (Python computes exact integers until `/`); correct means
//! |value − target| < 1e-5, as in TinyZero.
//!
//! `Score::answer` is [`canonical_equation`] of the tag content, so equations that differ only in
//! the order of commutative operands count as one when counting distinct correct answers.

use std::cmp::Ordering;

use anyhow::{ensure, Context};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{last_tag_content, Score, Verifier};
use crate::data::Example;

/// `[verifier] name = "countdown"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CountdownConfig {
    /// Score of a parseable but wrong equation. TinyZero and ROVER use 0.1; i-MENTOR's
    /// validation uses 0.0 (report which one a "score" includes).
    pub format_score: f32,
    /// Example field holding the numbers, a JSON array of integers.
    pub nums_field: String,
    /// Example field holding the target, a JSON number.
    pub target_field: String,
    /// Look for the answer tag only on the completion's last line (TinyZero fidelity).
    pub last_line_only: bool,
    /// Who earns `format_score`: `strict` (default) a parseable equation only; `tinyzero`
    /// anything inside the answer tag, as TinyZero, ROVER and i-MENTOR score it.
    pub format_rule: FormatRule,
}

/// Which wrong answers earn the format score (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FormatRule {
    /// Only a parseable equation over the allowed characters.
    #[default]
    Strict,
    /// Any content of the last answer tag (TinyZero's `compute_score`).
    Tinyzero,
}

impl Default for CountdownConfig {
    fn default() -> Self {
        CountdownConfig {
            format_score: 0.1,
            nums_field: "nums".into(),
            target_field: "target".into(),
            last_line_only: false,
            format_rule: FormatRule::Strict,
        }
    }
}

/// Parts: `format` is 1 when the answer tag holds a parseable equation, `correct` is 1 when it
/// reaches the target with each number used once.
///
/// ```
/// use llmrl::data::Example;
/// use llmrl::reward::{CountdownConfig, CountdownVerifier, Verifier};
/// let ex: Example = serde_json::from_str(r#"{"id":"0","fields":{"nums":[1,2,3],"target":1}}"#)?;
/// let v = CountdownVerifier::new(&CountdownConfig::default())?;
/// assert_eq!(v.score(&ex, "<answer> (1 + 2) / 3 </answer>").value, 1.0);
/// assert_eq!(v.score(&ex, "<answer> 1 + 2 + 3 </answer>").value, 0.1); // wrong value
/// assert_eq!(v.score(&ex, "<answer> 1 / 0 </answer>").value, 0.1); // numbers, ÷0
/// assert_eq!(v.score(&ex, "<answer> 3 ** 2 </answer>").value, 0.0); // not an equation
/// assert_eq!(v.score(&ex, "(1 + 2) / 3").value, 0.0); // no tag
/// # anyhow::Ok(())
/// ```
#[derive(Clone, Debug)]
pub struct CountdownVerifier {
    cfg: CountdownConfig,
}

/// Equations nested deeper than this are rejected rather than risking the stack.
const MAX_DEPTH: usize = 64;
/// Longer equations are rejected: a chain `1+1+…` builds a tree as deep as it is long, and the
/// tree is walked recursively. Real Countdown answers have under 20 tokens.
const MAX_TOKENS: usize = 512;
/// TinyZero's tolerance for "equals the target".
const TOLERANCE: f64 = 1e-5;

impl CountdownVerifier {
    pub fn new(cfg: &CountdownConfig) -> anyhow::Result<Self> {
        ensure!(
            (0.0..1.0).contains(&cfg.format_score),
            "countdown format_score = {} must be in [0, 1); hint: TinyZero uses 0.1, i-MENTOR \
             validation 0.0",
            cfg.format_score
        );
        Ok(CountdownVerifier { cfg: cfg.clone() })
    }

    fn problem(&self, example: &Example) -> Result<(Vec<i64>, f64), String> {
        let nums_field = &self.cfg.nums_field;
        let nums = match example.fields.get(nums_field) {
            Some(Value::Array(items)) => items.iter().map(Value::as_i64).collect::<Option<_>>(),
            // Some exports store the list as a string, e.g. "[3, 5, 7]".
            Some(Value::String(s)) => serde_json::from_str::<Vec<i64>>(s).ok(),
            _ => None,
        }
        .ok_or_else(|| format!("field `{nums_field}` is not an array of integers"))?;
        let target_field = &self.cfg.target_field;
        let target = match example.fields.get(target_field) {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .ok_or_else(|| format!("field `{target_field}` is not a number"))?;
        Ok((nums, target))
    }
}

impl Verifier for CountdownVerifier {
    fn score(&self, example: &Example, completion: &str) -> Score {
        let (nums, target) = match self.problem(example) {
            Ok(p) => p,
            Err(e) => return Score::zero(format!("example {}: {e}", example.id)),
        };
        let text = if self.cfg.last_line_only {
            completion.rsplit('\n').next().unwrap_or("")
        } else {
            completion
        };
        let Some(answer) = last_tag_content(text, "answer") else {
            return Score::zero("no <answer>...</answer> tag");
        };
        let expr = match parse(answer) {
            Ok(e) => e,
            Err(e) if self.cfg.format_rule == FormatRule::Tinyzero => {
                return Score {
                    value: self.cfg.format_score,
                    correct: false,
                    parts: vec![("format".into(), 1.0), ("correct".into(), 0.0)],
                    reason: format!(
                        "answer {answer:?} is not an equation ({e}); format credit under the \
                         tinyzero rule"
                    ),
                    answer: Some(answer.trim().to_string()),
                }
            }
            Err(e) => return Score::zero(format!("answer {:?} is not an equation: {e}", answer)),
        };
        let canonical = render(&canon(&expr));
        let wrong = |reason: String| Score {
            value: self.cfg.format_score,
            correct: false,
            parts: vec![("format".into(), 1.0), ("correct".into(), 0.0)],
            reason,
            answer: Some(canonical.clone()),
        };

        let mut used = Vec::new();
        expr.literals(&mut used);
        // A literal too long for i64 (None) can never equal one of `nums`.
        let mut used: Vec<Option<i64>> = used.iter().map(|d| d.parse().ok()).collect();
        let mut wanted: Vec<Option<i64>> = nums.iter().copied().map(Some).collect();
        used.sort_unstable();
        wanted.sort_unstable();
        if used != wanted {
            return wrong(format!("numbers used are not exactly {nums:?}, each once"));
        }
        let value = match expr.eval() {
            Ok(v) => v,
            Err(e) => return wrong(e),
        };
        if (value - target).abs() >= TOLERANCE {
            return wrong(format!("evaluates to {value}, target {target}"));
        }
        Score {
            value: 1.0,
            correct: true,
            parts: vec![("format".into(), 1.0), ("correct".into(), 1.0)],
            reason: format!("evaluates to {target}"),
            answer: Some(canonical),
        }
    }

    fn name(&self) -> &str {
        "countdown"
    }

    fn validate(&self, example: &Example) -> anyhow::Result<()> {
        self.problem(example)
            .map(|_| ())
            .map_err(anyhow::Error::msg)
            .with_context(|| {
                format!(
                    "countdown example {}; hint: set nums_field/target_field to the dataset's \
                     field names",
                    example.id
                )
            })
    }
}

/// The equation `expr` in a canonical text form, or `None` if it does not parse (same grammar
/// as the verifier). Whitespace is dropped, leading zeros are stripped, `+`/`-` and `*`/`/`
/// chains are flattened (`a-(b-c)` → `a-b+c`, `a/(b*c)` → `a/b/c`) and their operands sorted
/// (numbers by value first, then composite terms by text), so `3+(4*2)` and `(2*4)+3` both give
/// `3+2*4`. Used to count distinct correct equations; two different outputs may still be equal
/// in value (`2*3` and `3+3`), which is the point.
pub fn canonical_equation(expr: &str) -> Option<String> {
    parse(expr).ok().map(|e| render(&canon(&e)))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug)]
enum Expr {
    /// Decimal digits with leading zeros stripped ("0" stays "0").
    Num(String),
    Neg(Box<Expr>),
    Bin(Op, Box<Expr>, Box<Expr>),
}

impl Expr {
    fn literals<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Expr::Num(d) => out.push(d),
            Expr::Neg(e) => e.literals(out),
            Expr::Bin(_, a, b) => {
                a.literals(out);
                b.literals(out);
            }
        }
    }

    /// Evaluates in f64; any non-finite intermediate is an error rather than a silently wrong
    /// comparison. Depth is bounded by the parser.
    fn eval(&self) -> Result<f64, String> {
        let v = match self {
            // Digits only, so this cannot fail; a huge literal becomes inf, caught below.
            Expr::Num(d) => d.parse::<f64>().unwrap_or(f64::INFINITY),
            Expr::Neg(e) => -e.eval()?,
            Expr::Bin(op, a, b) => {
                let (a, b) = (a.eval()?, b.eval()?);
                match op {
                    Op::Add => a + b,
                    Op::Sub => a - b,
                    Op::Mul => a * b,
                    Op::Div if b == 0.0 => return Err("division by zero".into()),
                    Op::Div => a / b,
                }
            }
        };
        if v.is_finite() {
            Ok(v)
        } else {
            Err("a value overflows".into())
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tok<'a> {
    Num(&'a str),
    Op(Op),
    Open,
    Close,
}

fn tokenize(s: &str) -> Result<Vec<Tok<'_>>, String> {
    let mut toks = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'0'..=b'9' => {
                let start = i;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                toks.push(Tok::Num(&s[start..i]));
                continue;
            }
            b'+' => toks.push(Tok::Op(Op::Add)),
            b'-' => toks.push(Tok::Op(Op::Sub)),
            b'*' => toks.push(Tok::Op(Op::Mul)),
            b'/' => toks.push(Tok::Op(Op::Div)),
            b'(' => toks.push(Tok::Open),
            b')' => toks.push(Tok::Close),
            b if b.is_ascii_whitespace() => {}
            _ => {
                // Report the whole (possibly multi-byte) character.
                let c = s[i..].chars().next().unwrap_or('?');
                return Err(format!("character {c:?} is not allowed"));
            }
        }
        i += 1;
    }
    Ok(toks)
}

/// Recursive descent over
/// `expr := term (('+'|'-') term)*`, `term := unary (('*'|'/') unary)*`,
/// `unary := ('+'|'-') unary | primary`, `primary := NUM | '(' expr ')'`.
fn parse(s: &str) -> Result<Expr, String> {
    let toks = tokenize(s)?;
    if toks.is_empty() {
        return Err("empty".into());
    }
    if toks.len() > MAX_TOKENS {
        return Err(format!("longer than {MAX_TOKENS} tokens"));
    }
    let mut p = Parser { toks, pos: 0 };
    let e = p.expr(0)?;
    match p.toks.get(p.pos) {
        None => Ok(e),
        Some(t) => Err(format!("unexpected {t:?} at token {}", p.pos)),
    }
}

struct Parser<'a> {
    toks: Vec<Tok<'a>>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<Tok<'a>> {
        self.toks.get(self.pos).copied()
    }

    fn expr(&mut self, depth: usize) -> Result<Expr, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH}"));
        }
        let mut lhs = self.term(depth)?;
        while let Some(Tok::Op(op @ (Op::Add | Op::Sub))) = self.peek() {
            self.pos += 1;
            let rhs = self.term(depth)?;
            lhs = Expr::Bin(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn term(&mut self, depth: usize) -> Result<Expr, String> {
        let mut lhs = self.unary(depth)?;
        while let Some(Tok::Op(op @ (Op::Mul | Op::Div))) = self.peek() {
            self.pos += 1;
            let rhs = self.unary(depth)?;
            lhs = Expr::Bin(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH}"));
        }
        match self.peek() {
            Some(Tok::Op(Op::Sub)) => {
                self.pos += 1;
                Ok(Expr::Neg(Box::new(self.unary(depth + 1)?)))
            }
            Some(Tok::Op(Op::Add)) => {
                self.pos += 1;
                self.unary(depth + 1)
            }
            Some(Tok::Num(d)) => {
                self.pos += 1;
                let stripped = d.trim_start_matches('0');
                Ok(Expr::Num(
                    if stripped.is_empty() { "0" } else { stripped }.into(),
                ))
            }
            Some(Tok::Open) => {
                self.pos += 1;
                let e = self.expr(depth + 1)?;
                if self.peek() != Some(Tok::Close) {
                    return Err("unbalanced parentheses".into());
                }
                self.pos += 1;
                Ok(e)
            }
            Some(t) => Err(format!("unexpected {t:?} at token {}", self.pos)),
            None => Err("ends in the middle of an expression".into()),
        }
    }
}

/// Flattened form for [`canonical_equation`]: a sum of signed terms or a product of factors that
/// are multiplied or divided; neither contains a child of its own kind.
#[derive(Clone, Debug)]
enum Canon {
    Num(String),
    /// (negated, term)
    Sum(Vec<(bool, Canon)>),
    /// (divides, factor)
    Prod(Vec<(bool, Canon)>),
}

fn canon(e: &Expr) -> Canon {
    match e {
        Expr::Num(d) => Canon::Num(d.clone()),
        Expr::Neg(x) => sum(vec![(true, canon(x))]),
        Expr::Bin(op, a, b) => {
            let (a, b) = (canon(a), canon(b));
            match op {
                Op::Add => sum(vec![(false, a), (false, b)]),
                Op::Sub => sum(vec![(false, a), (true, b)]),
                Op::Mul => prod(vec![(false, a), (false, b)]),
                Op::Div => prod(vec![(false, a), (true, b)]),
            }
        }
    }
}

fn sum(items: Vec<(bool, Canon)>) -> Canon {
    let mut flat = Vec::new();
    for (neg, c) in items {
        match c {
            Canon::Sum(inner) => flat.extend(inner.into_iter().map(|(n, t)| (n ^ neg, t))),
            other => flat.push((neg, other)),
        }
    }
    finish(flat, Canon::Sum)
}

fn prod(items: Vec<(bool, Canon)>) -> Canon {
    let mut flat = Vec::new();
    for (div, c) in items {
        match c {
            Canon::Prod(inner) => flat.extend(inner.into_iter().map(|(d, f)| (d ^ div, f))),
            other => flat.push((div, other)),
        }
    }
    finish(flat, Canon::Prod)
}

/// Sorts the operands (non-inverted first, then by [`order`]) and collapses a lone
/// non-inverted operand to itself.
fn finish(items: Vec<(bool, Canon)>, wrap: fn(Vec<(bool, Canon)>) -> Canon) -> Canon {
    let mut keyed: Vec<(String, bool, Canon)> = items
        .into_iter()
        .map(|(inv, c)| (render(&c), inv, c))
        .collect();
    keyed.sort_by(|x, y| x.1.cmp(&y.1).then_with(|| order(&x.2, &x.0, &y.2, &y.0)));
    let mut sorted: Vec<(bool, Canon)> = keyed.into_iter().map(|(_, inv, c)| (inv, c)).collect();
    if let [(false, _)] = sorted.as_slice() {
        if let Some((_, c)) = sorted.pop() {
            return c;
        }
    }
    wrap(sorted)
}

/// Numbers by value (digits have no leading zeros, so length then text), before composites,
/// which go by their rendering.
fn order(a: &Canon, ka: &str, b: &Canon, kb: &str) -> Ordering {
    match (a, b) {
        (Canon::Num(x), Canon::Num(y)) => x.len().cmp(&y.len()).then_with(|| x.cmp(y)),
        (Canon::Num(_), _) => Ordering::Less,
        (_, Canon::Num(_)) => Ordering::Greater,
        _ => ka.cmp(kb),
    }
}

fn render(c: &Canon) -> String {
    match c {
        Canon::Num(d) => d.clone(),
        Canon::Sum(terms) => {
            let mut s = String::new();
            for (i, (neg, t)) in terms.iter().enumerate() {
                match (i, neg) {
                    (_, true) => s.push('-'),
                    (0, false) => {}
                    (_, false) => s.push('+'),
                }
                // Terms are numbers or products, which bind tighter than +/-.
                s.push_str(&render(t));
            }
            s
        }
        Canon::Prod(factors) => {
            let mut s = String::new();
            for (i, (div, f)) in factors.iter().enumerate() {
                match (i, div) {
                    (0, true) => s.push_str("1/"),
                    (0, false) => {}
                    (_, true) => s.push('/'),
                    (_, false) => s.push('*'),
                }
                match f {
                    Canon::Sum(_) => {
                        s.push('(');
                        s.push_str(&render(f));
                        s.push(')');
                    }
                    _ => s.push_str(&render(f)),
                }
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn example(nums: &[i64], target: i64) -> Example {
        let mut fields = serde_json::Map::new();
        fields.insert("nums".into(), json!(nums));
        fields.insert("target".into(), json!(target));
        Example {
            id: "t".into(),
            fields,
        }
    }

    fn verifier() -> CountdownVerifier {
        CountdownVerifier::new(&CountdownConfig::default()).unwrap()
    }

    #[test]
    fn score_table() {
        let v = verifier();
        // (nums, target, completion, expected value, expected correct)
        let cases: &[(&[i64], i64, &str, f32, bool)] = &[
            // TinyZero's own example.
            (&[1, 2, 3], 1, "<answer> (1 + 2) / 3 </answer>", 1.0, true),
            (
                &[44, 19, 35],
                98,
                "<think>..</think><answer>44+19+35</answer>",
                1.0,
                true,
            ),
            (
                &[44, 19, 35],
                98,
                "<answer>44 + 19 - 35</answer>",
                0.1,
                false,
            ),
            (&[3, 4, 2], 11, "<answer>3+(4*2)</answer>", 1.0, true),
            (
                &[3, 4, 2],
                11,
                "<answer>\n  ( ( 2 * 4 ) )\t+ 3 \n</answer>",
                1.0,
                true,
            ),
            (
                &[3, 4, 2],
                11,
                "<answer>((((3))))+((4)*(2))</answer>",
                1.0,
                true,
            ),
            (&[4, 2], 2, "<answer>4/2</answer>", 1.0, true),
            (
                &[3, 6],
                2,
                "<answer>6/3</answer> and later <answer>6-3</answer>",
                0.1,
                false,
            ),
            (
                &[3, 6],
                3,
                "<answer>6/3</answer> and later <answer>6-3</answer>",
                1.0,
                true,
            ),
            // Leading zeros are the same integer, as with Python's int().
            (&[3, 6], 3, "<answer>06-03</answer>", 1.0, true),
            // Unary minus is allowed, as Python's eval allows it.
            (&[3, 6], 3, "<answer>-3+6</answer>", 1.0, true),
            // Number reused, missing, extra.
            (&[3, 6], 9, "<answer>3+3+3</answer>", 0.1, false),
            (&[3, 6, 1], 9, "<answer>3+6</answer>", 0.1, false),
            (&[3, 6], 10, "<answer>3+6+1</answer>", 0.1, false),
            // Division by zero is a wrong (format-only) answer, as in TinyZero.
            (&[1, 0], 1, "<answer>1/0</answer>", 0.1, false),
            (&[5, 3, 3], 1, "<answer>5/(3-3)</answer>", 0.1, false),
            // Huge numbers: parsed and evaluated without panic, simply wrong.
            (
                &[99999999999, 99999999999],
                1,
                "<answer>99999999999*99999999999</answer>",
                0.1,
                false,
            ),
            (
                &[1],
                1,
                &format!("<answer>{}</answer>", "9".repeat(400)),
                0.1,
                false,
            ),
            // Not equations: 0.
            (&[2, 3], 8, "<answer>2**3</answer>", 0.0, false),
            (&[2, 3], 8, "<answer>2^3</answer>", 0.0, false),
            (&[6, 3], 2, "<answer>6//3</answer>", 0.0, false),
            (&[2, 3], 5, "<answer>two+3</answer>", 0.0, false),
            (&[2, 3], 5, "<answer>2.0+3</answer>", 0.0, false),
            (&[2, 3], 5, "<answer>2 + 3 = 5</answer>", 0.0, false),
            (&[2, 3], 6, "<answer>2×3</answer>", 0.0, false),
            (&[2, 3], 5, "<answer>２+3</answer>", 0.0, false),
            (&[2, 3], 5, "<answer>2\u{2212}3</answer>", 0.0, false),
            (&[2, 3], 5, "<answer></answer>", 0.0, false),
            (&[2, 3], 5, "<answer>   </answer>", 0.0, false),
            (&[2, 3], 5, "<answer>(2+3</answer>", 0.0, false),
            (&[2, 3], 5, "<answer>2+3)</answer>", 0.0, false),
            (&[2, 3], 5, "<answer>2+</answer>", 0.0, false),
            (&[2, 3], 5, "<answer>()</answer>", 0.0, false),
            (&[2, 3], 5, "2+3", 0.0, false),
            (&[2, 3], 5, "<answer>2+3", 0.0, false),
            (&[2, 3], 5, "", 0.0, false),
        ];
        for (nums, target, completion, value, correct) in cases {
            let s = v.score(&example(nums, *target), completion);
            assert_eq!(
                (s.value, s.correct),
                (*value, *correct),
                "{completion:?}: {}",
                s.reason
            );
            assert!(!s.reason.is_empty());
        }
    }

    #[test]
    fn deep_nesting_is_rejected_not_a_stack_overflow() {
        let v = verifier();
        let deep = format!(
            "<answer>{}1{}</answer>",
            "(".repeat(100_000),
            ")".repeat(100_000)
        );
        assert_eq!(v.score(&example(&[1], 1), &deep).value, 0.0);
        let minus = format!("<answer>{}1</answer>", "-".repeat(100_000));
        assert_eq!(v.score(&example(&[1], 1), &minus).value, 0.0);
        let long = format!("<answer>{}1</answer>", "1+".repeat(100_000));
        assert_eq!(v.score(&example(&[1], 1), &long).value, 0.0);
        assert_eq!(canonical_equation(&"1+".repeat(100_000)), None);
        let shallow = format!("<answer>{}1{}</answer>", "(".repeat(20), ")".repeat(20));
        assert_eq!(v.score(&example(&[1], 1), &shallow).value, 1.0);
    }

    #[test]
    fn last_line_only_reproduces_tinyzero() {
        let cfg = CountdownConfig {
            last_line_only: true,
            ..CountdownConfig::default()
        };
        let v = CountdownVerifier::new(&cfg).unwrap();
        let ex = example(&[1, 2], 3);
        assert_eq!(v.score(&ex, "think\n<answer>1+2</answer>").value, 1.0);
        assert_eq!(v.score(&ex, "<answer>1+2</answer>\n").value, 0.0);
        assert_eq!(verifier().score(&ex, "<answer>1+2</answer>\n").value, 1.0);
    }

    #[test]
    fn tinyzero_rule_credits_any_tag_content() {
        let tz = CountdownVerifier::new(&CountdownConfig {
            format_rule: FormatRule::Tinyzero,
            ..CountdownConfig::default()
        })
        .unwrap();
        let strict = verifier();
        let ex = example(&[90, 25, 67], 48);
        // Cases where TinyZero's compute_score and the strict rule differ (issue 14, item 8).
        for text in [
            "<answer>90 x 25 x 67</answer>",
            "<answer>90 × 25 × 67</answer>",
            "<answer>hello</answer>",
            "<answer></answer>",
            "<answer>3 ** 2</answer>",
        ] {
            let s = tz.score(&ex, text);
            assert_eq!((s.value, s.correct), (0.1, false), "{text}");
            assert_eq!(s.parts[0], ("format".into(), 1.0), "{text}");
            assert_eq!(strict.score(&ex, text).value, 0.0, "{text}");
        }
        // Where they agree: no tag, a wrong equation, a right one.
        assert_eq!(tz.score(&ex, "90 - 25 - 67").value, 0.0);
        assert_eq!(tz.score(&ex, "<answer>90 + 25 + 67</answer>").value, 0.1);
        let ok = example(&[90, 25, 67], 48);
        assert_eq!(tz.score(&ok, "<answer>90 - (67 - 25)</answer>").value, 1.0);
        let cfg: CountdownConfig = toml::from_str("format_rule = \"tinyzero\"").unwrap();
        assert_eq!(cfg.format_rule, FormatRule::Tinyzero);
        assert!(toml::from_str::<CountdownConfig>("format_rule = \"loose\"").is_err());
    }

    #[test]
    fn format_score_is_configurable() {
        let cfg = CountdownConfig {
            format_score: 0.0,
            ..CountdownConfig::default()
        };
        let v = CountdownVerifier::new(&cfg).unwrap();
        let s = v.score(&example(&[1, 2], 4), "<answer>1+2</answer>");
        assert_eq!((s.value, s.correct), (0.0, false));
        assert_eq!(
            s.parts,
            vec![("format".into(), 1.0), ("correct".into(), 0.0)]
        );
        assert!(CountdownVerifier::new(&CountdownConfig {
            format_score: 1.0,
            ..CountdownConfig::default()
        })
        .is_err());
    }

    #[test]
    fn malformed_examples_score_zero_and_fail_validation() {
        let v = verifier();
        let mut ex = example(&[1, 2], 3);
        ex.fields.insert("nums".into(), json!("[1, 2]"));
        assert_eq!(v.score(&ex, "<answer>1+2</answer>").value, 1.0);
        ex.fields.insert("nums".into(), json!([1.5, 2]));
        assert_eq!(v.score(&ex, "<answer>1+2</answer>").value, 0.0);
        assert!(v.validate(&ex).is_err());
        ex.fields.remove("nums");
        let err = format!("{:#}", v.validate(&ex).unwrap_err());
        assert!(err.contains("nums_field"), "{err}");
        assert!(v.validate(&example(&[1], 1)).is_ok());
    }

    #[test]
    fn answer_is_the_canonical_equation() {
        let v = verifier();
        let ex = example(&[3, 4, 2], 11);
        let a = v.score(&ex, "<answer>3+(4*2)</answer>").answer;
        let b = v.score(&ex, "<answer>(2 * 4) + 3</answer>").answer;
        assert_eq!(a, b);
        assert_eq!(a.as_deref(), Some("3+2*4"));
        assert_eq!(v.score(&ex, "<answer>2**3</answer>").answer, None);
    }

    #[test]
    fn canonical_equation_table() {
        let cases = [
            ("3+(4*2)", Some("3+2*4")),
            ("(2*4)+3", Some("3+2*4")),
            (" 1 + 2 + 3 ", Some("1+2+3")),
            ("3+(2+1)", Some("1+2+3")),
            ("10+9", Some("9+10")),
            ("a-(b-c)", None),
            ("7-(5-3)", Some("3+7-5")),
            ("7-5+3", Some("3+7-5")),
            ("8/(4*2)", Some("8/2/4")),
            ("8/(4/2)", Some("2*8/4")),
            ("(1+2)*(3-4)", Some("(1+2)*(3-4)")),
            ("(4-3)*(2+1)", Some("(1+2)*(4-3)")),
            ("-(3-5)", Some("5-3")),
            ("--3", Some("3")),
            ("2*-3", Some("2*(-3)")),
            ("007", Some("7")),
            ("2**3", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(canonical_equation(input).as_deref(), want, "{input:?}");
        }
        // Distinct-but-equal-valued equations stay distinct.
        assert_ne!(canonical_equation("2*3"), canonical_equation("3+3"));
    }

    #[test]
    fn canonical_form_keeps_the_value() {
        for e in [
            "7-(5-3)",
            "8/(4/2)",
            "(4-3)*(2+1)-6/(1+2)",
            "-(3-5)*2",
            "9/(3*(1+2))",
        ] {
            let before = parse(e).unwrap().eval().unwrap();
            let after = parse(&canonical_equation(e).unwrap())
                .unwrap()
                .eval()
                .unwrap();
            assert!((before - after).abs() < 1e-12, "{e}: {before} vs {after}");
        }
    }
}
