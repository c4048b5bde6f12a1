//! Countdown problems: a seeded generator whose every problem is solvable, a brute-force solver,
//! and a short worked completion for SFT warm starts.
//!
//! The task follows TinyZero (`reference/rover_imentor.md` §3): 3 or 4 numbers in 1..=99, a
//! target in 10..=100, an equation using each number exactly once with `+ - * /`. TinyZero's data
//! (`Jiayi-Pan/Countdown-Tasks-3to4`) states no licence, so we generate our own: sample the
//! numbers, combine them by a random expression tree in exact rational arithmetic, and keep the
//! result only if it is a positive integer in the target range. The equation is kept as the
//! `solution` field, so solvability holds by construction (and the tests re-check it with
//! [`solve`]). The distribution differs from TinyZero's (theirs was not published as code); only
//! the ranges match.
//!
//! Determinism and splits: problem `k` depends only on `(seed, k)` (ChaCha8 seeded with `seed`,
//! stream `k`), so a set is reproducible and a prefix of a longer set. A held-out eval set uses a
//! *different seed*; because two seeds can still draw the same `(nums, target)` by chance, the
//! `exclude` option names the other split's generator and every problem it yields is skipped.
//! Duplicates inside one set are skipped too.
//!
//! Not here: the reward (TinyZero's last-line / numbers-once / 1e-5 rules live in `reward`), and
//! operators beyond `+ - * /` (TinyZero's `eval` accepts `**` and `//`; we never generate them).

use std::collections::HashSet;
use std::fmt;

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::Example;

/// `{ source = "countdown", ... }` in a recipe's `[data]` table. Defaults follow TinyZero's
/// Countdown-Tasks-3to4 ranges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountdownConfig {
    /// Generator seed. Train and eval sets must use different seeds (and eval should `exclude`
    /// the train generator to rule out chance collisions).
    #[serde(default)]
    pub seed: u64,
    /// Number of distinct problems to produce.
    #[serde(default = "default_count")]
    pub count: usize,
    /// Allowed operand counts; each problem picks one uniformly.
    #[serde(default = "default_num_operands")]
    pub num_operands: Vec<usize>,
    /// Inclusive range of the operands.
    #[serde(default = "default_min_number")]
    pub min_number: i64,
    #[serde(default = "default_max_number")]
    pub max_number: i64,
    /// Inclusive range of the target.
    #[serde(default = "default_min_target")]
    pub min_target: i64,
    #[serde(default = "default_max_target")]
    pub max_target: i64,
    /// The other split's generator: every `(nums, target)` it yields is skipped here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Box<CountdownConfig>>,
}

fn default_count() -> usize {
    1000
}
fn default_num_operands() -> Vec<usize> {
    vec![3, 4]
}
fn default_min_number() -> i64 {
    1
}
fn default_max_number() -> i64 {
    99
}
fn default_min_target() -> i64 {
    10
}
fn default_max_target() -> i64 {
    100
}

impl Default for CountdownConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            count: default_count(),
            num_operands: default_num_operands(),
            min_number: default_min_number(),
            max_number: default_max_number(),
            min_target: default_min_target(),
            max_target: default_max_target(),
            exclude: None,
        }
    }
}

/// Tries per problem index before giving up on it (the index is then skipped). With the default
/// ranges a try succeeds roughly one time in three, so this is never reached in practice.
const TRIES_PER_INDEX: usize = 200;

impl CountdownConfig {
    /// Check ranges before generating, with a hint for each mistake.
    pub fn validate(&self) -> Result<()> {
        if self.num_operands.is_empty() {
            bail!("countdown: `num_operands` is empty; hint: use e.g. num_operands = [3, 4]");
        }
        if let Some(&n) = self.num_operands.iter().find(|&&n| !(2..=6).contains(&n)) {
            bail!("countdown: num_operands contains {n}; hint: use counts between 2 and 6");
        }
        if self.min_number < 1 || self.min_number > self.max_number {
            bail!(
                "countdown: operand range {}..={} is empty or not positive; hint: use \
                 1 <= min_number <= max_number",
                self.min_number,
                self.max_number
            );
        }
        if self.max_number > 10_000 {
            bail!(
                "countdown: max_number {} is too large; hint: keep it <= 10000",
                self.max_number
            );
        }
        if self.min_target < 1 || self.min_target > self.max_target {
            bail!(
                "countdown: target range {}..={} is empty or not positive; hint: use \
                 1 <= min_target <= max_target",
                self.min_target,
                self.max_target
            );
        }
        if let Some(ex) = &self.exclude {
            ex.validate()?;
        }
        Ok(())
    }

    /// Problem number `k` of this generator, or `None` when no try produced a target in range.
    /// Depends only on `(seed, k)` and the ranges.
    pub fn problem(&self, k: u64) -> Option<Problem> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(k);
        for _ in 0..TRIES_PER_INDEX {
            let n = self.num_operands[rng.random_range(0..self.num_operands.len())];
            let nums: Vec<i64> = (0..n)
                .map(|_| rng.random_range(self.min_number..=self.max_number))
                .collect();
            let Some((value, solution)) = random_expression(&nums, &mut rng) else {
                continue;
            };
            if value.den == 1
                && (self.min_target as i128..=self.max_target as i128).contains(&value.num)
            {
                let mut nums = nums;
                nums.shuffle(&mut rng);
                return Some(Problem {
                    nums,
                    target: value.num as i64,
                    solution,
                });
            }
        }
        None
    }

    /// `count` distinct problems in index order, skipping those the `exclude` generator yields.
    pub fn generate(&self) -> Result<Vec<(u64, Problem)>> {
        self.validate()?;
        let excluded: HashSet<Key> = match &self.exclude {
            Some(other) => other.generate()?.iter().map(|(_, p)| p.key()).collect(),
            None => HashSet::new(),
        };
        let mut seen = HashSet::with_capacity(self.count);
        let mut out = Vec::with_capacity(self.count);
        // A bound on indices so that a range too narrow for `count` distinct problems fails
        // instead of looping forever.
        let max_index = (self.count as u64).saturating_mul(20).saturating_add(1000);
        let mut k = 0u64;
        while out.len() < self.count {
            if k >= max_index {
                bail!(
                    "countdown: only {} distinct problems found in {k} draws, {} requested; \
                     hint: widen the number/target ranges or lower `count`",
                    out.len(),
                    self.count
                );
            }
            if let Some(p) = self.problem(k) {
                let key = p.key();
                if !excluded.contains(&key) && seen.insert(key) {
                    out.push((k, p));
                }
            }
            k += 1;
        }
        Ok(out)
    }

    /// The generated set as [`Example`]s with fields `nums`, `target` and `solution`; the id is
    /// `countdown:{seed}:{k}`.
    pub fn examples(&self) -> Result<Vec<Example>> {
        Ok(self
            .generate()?
            .into_iter()
            .map(|(k, p)| p.to_example(format!("countdown:{}:{k}", self.seed)))
            .collect())
    }
}

/// One Countdown problem with a known solution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Operands in shuffled order.
    pub nums: Vec<i64>,
    pub target: i64,
    /// An equation using each number once, e.g. `(95 - 39) + 17`.
    pub solution: String,
}

/// Identity of a problem for overlap checks: the sorted operands and the target.
type Key = (Vec<i64>, i64);

impl Problem {
    fn key(&self) -> Key {
        let mut nums = self.nums.clone();
        nums.sort_unstable();
        (nums, self.target)
    }

    pub fn to_example(&self, id: String) -> Example {
        let mut fields = Map::new();
        fields.insert("nums".into(), json!(self.nums));
        fields.insert("target".into(), json!(self.target));
        fields.insert("solution".into(), json!(self.solution));
        Example { id, fields }
    }
}

/// Exact rational `num / den` with `den > 0` and the fraction reduced. i128 keeps products of six
/// operands up to 10^4 exact; any overflow makes the operation fail instead of wrapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rational {
    pub num: i128,
    pub den: i128,
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    a = a.abs();
    b = b.abs();
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Rational {
    pub fn int(n: i64) -> Self {
        Self {
            num: n as i128,
            den: 1,
        }
    }

    fn new(num: i128, den: i128) -> Option<Self> {
        if den == 0 {
            return None;
        }
        let g = gcd(num, den).max(1);
        let s = if den < 0 { -1 } else { 1 };
        Some(Self {
            num: s * num / g,
            den: s * den / g,
        })
    }

    /// `self op other`; `None` on division by zero or overflow.
    pub fn apply(self, op: Op, other: Self) -> Option<Self> {
        let (a, b, c, d) = (self.num, self.den, other.num, other.den);
        match op {
            Op::Add => Self::new(
                a.checked_mul(d)?.checked_add(c.checked_mul(b)?)?,
                b.checked_mul(d)?,
            ),
            Op::Sub => Self::new(
                a.checked_mul(d)?.checked_sub(c.checked_mul(b)?)?,
                b.checked_mul(d)?,
            ),
            Op::Mul => Self::new(a.checked_mul(c)?, b.checked_mul(d)?),
            Op::Div => Self::new(a.checked_mul(d)?, b.checked_mul(c)?),
        }
    }
}

impl fmt::Display for Rational {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

impl Op {
    pub const ALL: [Op; 4] = [Op::Add, Op::Sub, Op::Mul, Op::Div];

    pub fn symbol(self) -> char {
        match self {
            Op::Add => '+',
            Op::Sub => '-',
            Op::Mul => '*',
            Op::Div => '/',
        }
    }
}

/// A value with the expression text that produced it; compound expressions are wrapped in
/// parentheses when they become an operand, so the text never depends on precedence rules.
#[derive(Clone, Debug)]
struct Term {
    value: Rational,
    text: String,
    compound: bool,
}

impl Term {
    fn leaf(n: i64) -> Self {
        Self {
            value: Rational::int(n),
            text: n.to_string(),
            compound: false,
        }
    }

    fn operand(&self) -> String {
        if self.compound {
            format!("({})", self.text)
        } else {
            self.text.clone()
        }
    }

    fn combine(&self, op: Op, other: &Term) -> Option<Term> {
        Some(Term {
            value: self.value.apply(op, other.value)?,
            text: format!("{} {} {}", self.operand(), op.symbol(), other.operand()),
            compound: true,
        })
    }
}

/// Combine `nums` by a random binary tree: repeatedly take two random terms and a random
/// operator until one term is left. `None` on division by zero.
fn random_expression(nums: &[i64], rng: &mut ChaCha8Rng) -> Option<(Rational, String)> {
    let mut pool: Vec<Term> = nums.iter().map(|&n| Term::leaf(n)).collect();
    while pool.len() > 1 {
        let a = pool.swap_remove(rng.random_range(0..pool.len()));
        let b = pool.swap_remove(rng.random_range(0..pool.len()));
        let op = Op::ALL[rng.random_range(0..4)];
        pool.push(a.combine(op, &b)?);
    }
    pool.pop().map(|t| (t.value, t.text))
}

/// Brute force: an equation using every number in `nums` exactly once that equals `target`, or
/// `None`. Exhaustive over ordered pairs and the four operators (intermediate fractions allowed,
/// as Python's `eval` in TinyZero allows them); fine up to ~5 numbers.
pub fn solve(nums: &[i64], target: i64) -> Option<String> {
    fn search(pool: &[Term], target: Rational) -> Option<String> {
        if pool.len() == 1 {
            return (pool[0].value == target).then(|| pool[0].text.clone());
        }
        for i in 0..pool.len() {
            for j in 0..pool.len() {
                if i == j {
                    continue;
                }
                for op in Op::ALL {
                    // + and * commute: one order suffices.
                    if matches!(op, Op::Add | Op::Mul) && i > j {
                        continue;
                    }
                    let Some(t) = pool[i].combine(op, &pool[j]) else {
                        continue;
                    };
                    let mut next: Vec<Term> = pool
                        .iter()
                        .enumerate()
                        .filter(|&(k, _)| k != i && k != j)
                        .map(|(_, t)| t.clone())
                        .collect();
                    next.push(t);
                    if let Some(s) = search(&next, target) {
                        return Some(s);
                    }
                }
            }
        }
        None
    }
    if nums.is_empty() {
        return None;
    }
    let pool: Vec<Term> = nums.iter().map(|&n| Term::leaf(n)).collect();
    search(&pool, Rational::int(target))
}

/// One evaluation step `a op b = result`.
type Step = (Rational, Op, Rational, Rational);

/// Parse an equation of integers, `+ - * /` and parentheses (standard precedence, left
/// associative) into its evaluation steps `(a, op, b, result)` in order, and the final value.
/// `None` on any syntax error or division by zero. Used to write a worked `<think>` section.
fn steps(expr: &str) -> Option<(Vec<Step>, Rational)> {
    struct Parser<'a> {
        s: &'a [u8],
        i: usize,
        steps: Vec<Step>,
    }
    impl Parser<'_> {
        fn skip_ws(&mut self) {
            while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
                self.i += 1;
            }
        }
        fn peek(&mut self) -> Option<u8> {
            self.skip_ws();
            self.s.get(self.i).copied()
        }
        fn binary(&mut self, a: Rational, op: Op, b: Rational) -> Option<Rational> {
            let r = a.apply(op, b)?;
            self.steps.push((a, op, b, r));
            Some(r)
        }
        fn expr(&mut self) -> Option<Rational> {
            let mut v = self.term()?;
            while let Some(c @ (b'+' | b'-')) = self.peek() {
                self.i += 1;
                let rhs = self.term()?;
                v = self.binary(v, if c == b'+' { Op::Add } else { Op::Sub }, rhs)?;
            }
            Some(v)
        }
        fn term(&mut self) -> Option<Rational> {
            let mut v = self.atom()?;
            while let Some(c @ (b'*' | b'/')) = self.peek() {
                self.i += 1;
                let rhs = self.atom()?;
                v = self.binary(v, if c == b'*' { Op::Mul } else { Op::Div }, rhs)?;
            }
            Some(v)
        }
        fn atom(&mut self) -> Option<Rational> {
            match self.peek()? {
                b'(' => {
                    self.i += 1;
                    let v = self.expr()?;
                    if self.peek()? != b')' {
                        return None;
                    }
                    self.i += 1;
                    Some(v)
                }
                c if c.is_ascii_digit() => {
                    let start = self.i;
                    while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                        self.i += 1;
                    }
                    let n: i64 = std::str::from_utf8(&self.s[start..self.i])
                        .ok()?
                        .parse()
                        .ok()?;
                    Some(Rational::int(n))
                }
                _ => None,
            }
        }
    }
    let mut p = Parser {
        s: expr.as_bytes(),
        i: 0,
        steps: Vec::new(),
    };
    let v = p.expr()?;
    (p.peek().is_none()).then_some((p.steps, v))
}

/// A short worked completion for SFT warm starts:
/// `<think>\n...steps...\n</think>\n<answer> {solution} </answer>`.
///
/// Uses the example's `solution` when present and parseable, otherwise solves `nums`/`target`
/// by brute force; `None` when the example has no usable `nums`/`target` or no solution exists.
/// The answer is the last line with no trailing newline, as TinyZero's reward requires.
pub fn countdown_completion(ex: &Example) -> Option<String> {
    let nums: Vec<i64> = ex
        .fields
        .get("nums")?
        .as_array()?
        .iter()
        .map(Value::as_i64)
        .collect::<Option<_>>()?;
    let target = ex.fields.get("target")?.as_i64()?;
    let given = ex
        .fields
        .get("solution")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let parsed = given
        .as_deref()
        .and_then(|s| steps(s).map(|st| (s.to_owned(), st)))
        .filter(|(_, (_, v))| *v == Rational::int(target));
    let (solution, (steps, _)) = match parsed {
        Some(p) => p,
        None => {
            let s = solve(&nums, target)?;
            let st = steps(&s)?;
            (s, st)
        }
    };
    let list = nums
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let mut think = format!("I need to make {target} from {list}, using each number once.");
    for (a, op, b, r) in &steps {
        think.push_str(&format!("\n{a} {} {b} = {r}", op.symbol()));
    }
    think.push_str(&format!("\nThat gives {target}."));
    Some(format!(
        "<think>\n{think}\n</think>\n<answer> {solution} </answer>"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(expr: &str) -> Option<Rational> {
        steps(expr).map(|(_, v)| v)
    }

    fn sorted(mut v: Vec<i64>) -> Vec<i64> {
        v.sort_unstable();
        v
    }

    /// The numbers an equation uses, as TinyZero reads them (`\d+`).
    fn numbers_in(expr: &str) -> Vec<i64> {
        expr.split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect()
    }

    #[test]
    fn rational_arithmetic_is_exact_and_reduced() {
        let third = Rational::int(1).apply(Op::Div, Rational::int(3)).unwrap();
        assert_eq!(third, Rational { num: 1, den: 3 });
        let one = third.apply(Op::Mul, Rational::int(3)).unwrap();
        assert_eq!(one, Rational::int(1));
        assert_eq!(
            Rational::int(2).apply(Op::Div, Rational::int(-4)).unwrap(),
            Rational { num: -1, den: 2 }
        );
        assert_eq!(Rational::int(5).apply(Op::Div, Rational::int(0)), None);
    }

    #[test]
    fn parser_follows_precedence() {
        assert_eq!(eval("(95 - 39) + 17"), Some(Rational::int(73)));
        assert_eq!(eval("2 + 3 * 4"), Some(Rational::int(14)));
        assert_eq!(eval("(1 + 2) / 3"), Some(Rational::int(1)));
        assert_eq!(eval("8 - 4 - 2"), Some(Rational::int(2)));
        assert_eq!(eval("1 / 0"), None);
        assert_eq!(eval("1 +"), None);
        assert_eq!(eval("(1 + 2"), None);
        assert_eq!(eval("1 2"), None);
    }

    #[test]
    fn solve_finds_known_and_rejects_impossible() {
        let s = solve(&[1, 2, 3], 1).unwrap();
        assert_eq!(eval(&s), Some(Rational::int(1)));
        assert_eq!(sorted(numbers_in(&s)), vec![1, 2, 3]);
        // Needs a fraction on the way: 8 / (3 - 8/3) = 24.
        let s = solve(&[3, 3, 8, 8], 24).unwrap();
        assert_eq!(eval(&s), Some(Rational::int(24)));
        // 1 and 1 reach at most 2.
        assert_eq!(solve(&[1, 1], 3), None);
        assert_eq!(solve(&[], 0), None);
    }

    #[test]
    fn generated_problems_are_in_range_and_solvable() {
        let cfg = CountdownConfig {
            count: 200,
            ..Default::default()
        };
        let problems = cfg.generate().unwrap();
        assert_eq!(problems.len(), 200);
        for (_, p) in &problems {
            assert!([3, 4].contains(&p.nums.len()), "{p:?}");
            assert!(p.nums.iter().all(|n| (1..=99).contains(n)), "{p:?}");
            assert!((10..=100).contains(&p.target), "{p:?}");
            // The stored solution uses each number once and hits the target exactly.
            assert_eq!(
                sorted(numbers_in(&p.solution)),
                sorted(p.nums.clone()),
                "{p:?}"
            );
            assert_eq!(eval(&p.solution), Some(Rational::int(p.target)), "{p:?}");
            // And an independent search agrees it is solvable.
            assert!(solve(&p.nums, p.target).is_some(), "{p:?}");
        }
        let threes = problems.iter().filter(|(_, p)| p.nums.len() == 3).count();
        assert!(
            (60..140).contains(&threes),
            "operand counts should be mixed, got {threes} x 3"
        );
    }

    #[test]
    fn generation_is_deterministic_per_seed_and_index() {
        let a = CountdownConfig {
            count: 50,
            ..Default::default()
        };
        let long = CountdownConfig {
            count: 80,
            ..Default::default()
        };
        let (x, y) = (a.generate().unwrap(), long.generate().unwrap());
        assert_eq!(x, a.generate().unwrap());
        // A shorter set is a prefix of a longer one: problem k depends only on (seed, k).
        assert_eq!(x[..], y[..50]);
        let (k, p) = &x[7];
        assert_eq!(a.problem(*k).as_ref(), Some(p));
        let other = CountdownConfig {
            seed: 1,
            count: 50,
            ..Default::default()
        };
        assert_ne!(x, other.generate().unwrap());
    }

    #[test]
    fn seeds_0_and_1_do_not_overlap_and_exclude_removes_collisions() {
        let train = CountdownConfig {
            seed: 0,
            count: 500,
            ..Default::default()
        };
        let eval_cfg = CountdownConfig {
            seed: 1,
            count: 500,
            ..Default::default()
        };
        let keys = |c: &CountdownConfig| -> HashSet<Key> {
            c.generate().unwrap().iter().map(|(_, p)| p.key()).collect()
        };
        let (tk, ek) = (keys(&train), keys(&eval_cfg));
        assert_eq!(tk.len(), 500, "no duplicates inside a set");
        assert_eq!(tk.intersection(&ek).count(), 0);

        // Collisions are possible in principle (birthday odds grow with set sizes), so check
        // `exclude` on a range so narrow that two seeds must collide.
        let narrow = CountdownConfig {
            count: 5,
            num_operands: vec![2],
            min_number: 1,
            max_number: 3,
            min_target: 1,
            max_target: 9,
            ..Default::default()
        };
        let a = narrow.generate().unwrap();
        let b_cfg = CountdownConfig {
            seed: 1,
            exclude: Some(Box::new(narrow.clone())),
            ..narrow.clone()
        };
        let b = b_cfg.generate().unwrap();
        let a_keys: HashSet<Key> = a.iter().map(|(_, p)| p.key()).collect();
        assert!(b.iter().all(|(_, p)| !a_keys.contains(&p.key())));
        // And without exclude, this narrow range does collide, so the test above is not vacuous.
        let plain = CountdownConfig {
            seed: 1,
            ..narrow.clone()
        }
        .generate()
        .unwrap();
        assert!(plain.iter().any(|(_, p)| a_keys.contains(&p.key())));
    }

    #[test]
    fn impossible_count_is_an_error_with_hint() {
        let tiny = CountdownConfig {
            count: 1000,
            num_operands: vec![2],
            min_number: 1,
            max_number: 2,
            min_target: 1,
            max_target: 4,
            ..Default::default()
        };
        let err = tiny.generate().unwrap_err().to_string();
        assert!(err.contains("hint"), "{err}");
        let bad = CountdownConfig {
            num_operands: vec![1],
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let bad = CountdownConfig {
            min_target: 50,
            max_target: 10,
            ..Default::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("target range"));
    }

    #[test]
    fn examples_carry_nums_target_solution() {
        let cfg = CountdownConfig {
            count: 3,
            seed: 9,
            ..Default::default()
        };
        let ex = cfg.examples().unwrap();
        assert_eq!(ex.len(), 3);
        assert!(ex[0].id.starts_with("countdown:9:"));
        assert!(ex[0].fields["nums"].is_array());
        assert!(ex[0].fields["target"].is_i64());
        assert!(ex[0].fields["solution"].is_string());
    }

    #[test]
    fn completion_writes_steps_and_answer_last() {
        let mut fields = Map::new();
        fields.insert("nums".into(), json!([17, 95, 39]));
        fields.insert("target".into(), json!(73));
        fields.insert("solution".into(), json!("(95 - 39) + 17"));
        let ex = Example {
            id: "t".into(),
            fields,
        };
        let c = countdown_completion(&ex).unwrap();
        assert_eq!(
            c,
            "<think>\nI need to make 73 from 17, 95, 39, using each number once.\n\
             95 - 39 = 56\n56 + 17 = 73\nThat gives 73.\n</think>\n<answer> (95 - 39) + 17 </answer>"
        );
        // Without a solution (or with a wrong one) it falls back to the solver.
        let mut ex2 = ex.clone();
        ex2.fields.insert("solution".into(), json!("95 + 39 + 17"));
        let c2 = countdown_completion(&ex2).unwrap();
        let answer = c2.lines().last().unwrap();
        let eq = answer
            .trim_start_matches("<answer>")
            .trim_end_matches("</answer>")
            .trim();
        assert_eq!(eval(eq), Some(Rational::int(73)));
        ex2.fields.remove("solution");
        assert!(countdown_completion(&ex2).is_some());
        // Unsolvable or malformed examples give None, not an error.
        let mut bad = ex.clone();
        bad.fields.insert("nums".into(), json!([1, 1]));
        bad.fields.insert("target".into(), json!(100));
        bad.fields.remove("solution");
        assert_eq!(countdown_completion(&bad), None);
        bad.fields.insert("nums".into(), json!("1, 1"));
        assert_eq!(countdown_completion(&bad), None);
    }
}
