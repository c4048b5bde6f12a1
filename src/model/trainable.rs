//! Which parameters train: all of them, a set of whole tensors, or some rows of a tensor.
//!
//! One [`Trainable`] is decided when the run is set up and then respected everywhere a parameter
//! could move or be checked: the optimizer ([`crate::optim::AdamW::with_trainable`]) updates only
//! the trainable elements (frozen tensors get no moments at all; frozen rows of a partially
//! trainable tensor are never written, so they stay bit-identical also under weight decay), the
//! gradient clip measures only them, and [`gradient_coverage`] checks that each trainable part got
//! a finite, nonzero gradient while listing the frozen ones instead of failing on them.
//!
//! Rows are along dim 0, the token axis of `embed_tokens` / `lm_head` (V, H): "train only the new
//! tokens" ([`Trainable::token_rows`]) is one instance. Gradients are still computed for frozen
//! parameters (candle has no `requires_grad`); they are ignored, not avoided.

// Row sets are lists of ranges; a one-range list is the common case, not a mistake.
#![allow(clippy::single_range_in_vec_init)]

use std::collections::BTreeMap;
use std::ops::Range;

use anyhow::{bail, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Var};

/// The trainable part of one tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    All,
    /// Rows (dim 0), sorted, disjoint, non-adjacent and non-empty (see [`Part::rows`]).
    Rows(Vec<Range<usize>>),
}

impl Part {
    /// Rows from any ranges: sorted, overlapping or touching ranges merged, empty ones dropped.
    pub fn rows(ranges: impl IntoIterator<Item = Range<usize>>) -> Self {
        let mut rs: Vec<Range<usize>> = ranges.into_iter().filter(|r| r.start < r.end).collect();
        rs.sort_by_key(|r| r.start);
        let mut out: Vec<Range<usize>> = Vec::with_capacity(rs.len());
        for r in rs {
            match out.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => out.push(r),
            }
        }
        Part::Rows(out)
    }

    /// Rows holding the token `ids` (any order, duplicates allowed).
    pub fn token_rows(ids: &[u32]) -> Self {
        Self::rows(ids.iter().map(|&i| i as usize..i as usize + 1))
    }

    /// The element ranges of a tensor of `dims` this part covers (row-major: a row is contiguous).
    pub fn element_ranges(&self, dims: &[usize]) -> Vec<Range<usize>> {
        let n: usize = dims.iter().product();
        match self {
            Part::All => vec![0..n],
            Part::Rows(rows) => {
                let row = dims.iter().skip(1).product::<usize>();
                rows.iter().map(|r| r.start * row..r.end * row).collect()
            }
        }
    }
}

/// Which parameters train. Parameters it does not name are frozen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Trainable {
    /// Every parameter, whole (the default: full fine-tuning).
    #[default]
    All,
    /// Only these, each whole or in part.
    Only(BTreeMap<String, Part>),
}

impl Trainable {
    /// Whole tensors by HF name, everything else frozen.
    pub fn names<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        Trainable::Only(names.into_iter().map(|n| (n.into(), Part::All)).collect())
    }

    /// Only the rows of `ids` in the token matrices: `model.embed_tokens.weight` and, when the
    /// head is not tied to it, `lm_head.weight` (a tied head is the embedding, one tensor). The
    /// "train only the new tokens, base frozen" option.
    pub fn token_rows(ids: &[u32], tied: bool) -> Self {
        let mut m = BTreeMap::new();
        m.insert(
            "model.embed_tokens.weight".to_string(),
            Part::token_rows(ids),
        );
        if !tied {
            m.insert("lm_head.weight".to_string(), Part::token_rows(ids));
        }
        Trainable::Only(m)
    }

    /// What of `name` trains; `None` when it is frozen.
    pub fn part(&self, name: &str) -> Option<Part> {
        match self {
            Trainable::All => Some(Part::All),
            Trainable::Only(m) => m.get(name).cloned(),
        }
    }

    /// Checks the spec against the parameters: every name exists, row ranges fit the tensor.
    /// A typo in a name would otherwise freeze the whole model silently.
    pub fn validate(&self, params: &[(String, Var)]) -> Result<()> {
        let Trainable::Only(m) = self else {
            return Ok(());
        };
        for (name, part) in m {
            let Some((_, var)) = params.iter().find(|(n, _)| n == name) else {
                let some: Vec<&str> = params.iter().take(3).map(|(n, _)| n.as_str()).collect();
                bail!(
                    "trainable parameter `{name}` is not a weight of this model; hint: use HF \
                     names such as {some:?}"
                );
            };
            if let Part::Rows(rows) = part {
                let n = var.dims().first().copied().unwrap_or(0);
                if let Some(r) = rows.iter().find(|r| r.end > n) {
                    bail!(
                        "trainable rows {}..{} of `{name}` are out of range: it has {n} rows",
                        r.start,
                        r.end
                    );
                }
            }
        }
        Ok(())
    }

    /// Names of the frozen parameters among `params`, in their order.
    pub fn frozen(&self, params: &[(String, Var)]) -> Vec<String> {
        params
            .iter()
            .filter(|(n, _)| self.part(n).is_none())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Number of trainable elements among `params`.
    pub fn num_trainable(&self, params: &[(String, Var)]) -> usize {
        params
            .iter()
            .filter_map(|(n, v)| Some((self.part(n)?, v)))
            .map(|(p, v)| {
                p.element_ranges(v.dims())
                    .iter()
                    .map(|r| r.len())
                    .sum::<usize>()
            })
            .sum()
    }
}

/// What [`gradient_coverage`] found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Coverage {
    /// Trainable parameters checked.
    pub checked: usize,
    /// Frozen parameters (not checked: a frozen tensor may get a gradient or not).
    pub frozen: Vec<String>,
    /// Trainable parameters without a gradient, or whose trainable part has a zero or non-finite
    /// gradient, with the reason.
    pub problems: Vec<String>,
}

/// Checks that every trainable part of `params` got a finite, nonzero gradient in `grads` (the
/// model uses every weight it should train, and no op dropped a gradient on the way).
pub fn gradient_coverage(
    params: &[(String, Var)],
    trainable: &Trainable,
    grads: &GradStore,
) -> Result<Coverage> {
    let mut cov = Coverage::default();
    for (name, var) in params {
        let Some(part) = trainable.part(name) else {
            cov.frozen.push(name.clone());
            continue;
        };
        cov.checked += 1;
        let Some(g) = grads.get(var.as_tensor()) else {
            cov.problems.push(format!("{name}: no gradient"));
            continue;
        };
        let g = g.to_dtype(DType::F64)?;
        let mut n2 = 0.0;
        match &part {
            Part::All => n2 += g.sqr()?.sum_all()?.to_scalar::<f64>()?,
            Part::Rows(rows) => {
                for r in rows {
                    n2 += g
                        .narrow(0, r.start, r.len())?
                        .sqr()?
                        .sum_all()?
                        .to_scalar::<f64>()?;
                }
            }
        }
        if !n2.is_finite() || n2 == 0.0 {
            cov.problems
                .push(format!("{name}: |g|² = {n2} over its trainable part"));
        }
    }
    Ok(cov)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn var(rows: usize, cols: usize) -> Var {
        Var::from_tensor(&Tensor::zeros((rows, cols), DType::F32, &Device::Cpu).unwrap()).unwrap()
    }

    #[test]
    fn rows_are_sorted_and_merged() {
        assert_eq!(
            Part::rows([5..7, 0..2, 1..3, 7..8, 4..4]),
            Part::Rows(vec![0..3, 5..8])
        );
        assert_eq!(
            Part::token_rows(&[9, 3, 4, 4]),
            Part::Rows(vec![3..5, 9..10])
        );
        assert_eq!(
            Part::Rows(vec![1..2, 4..6]).element_ranges(&[8, 3]),
            vec![3..6, 12..18]
        );
        assert_eq!(Part::All.element_ranges(&[8, 3]), vec![0..24]);
    }

    #[test]
    fn token_rows_name_the_head_only_when_untied() {
        let t = Trainable::token_rows(&[4], true);
        assert_eq!(
            t.part("model.embed_tokens.weight"),
            Some(Part::Rows(vec![4..5]))
        );
        assert_eq!(t.part("lm_head.weight"), None);
        let u = Trainable::token_rows(&[4], false);
        assert_eq!(u.part("lm_head.weight"), Some(Part::Rows(vec![4..5])));
    }

    #[test]
    fn validate_rejects_unknown_names_and_rows_out_of_range() {
        let params = vec![("a".to_string(), var(4, 2)), ("b".to_string(), var(2, 2))];
        assert!(Trainable::names(["a"]).validate(&params).is_ok());
        let e = Trainable::names(["c"])
            .validate(&params)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`c`") && e.contains("hint"), "{e}");
        let rows = Trainable::Only(BTreeMap::from([("a".to_string(), Part::rows([2..5]))]));
        let e = rows.validate(&params).unwrap_err().to_string();
        assert!(e.contains("2..5") && e.contains("4 rows"), "{e}");
        assert_eq!(
            Trainable::names(["b"]).frozen(&params),
            vec!["a".to_string()]
        );
        assert_eq!(rows.num_trainable(&params), 6);
        assert_eq!(Trainable::All.num_trainable(&params), 12);
    }

    #[test]
    fn coverage_checks_trainable_rows_only() {
        let (a, b) = (var(3, 2), var(2, 2));
        let params = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
        let mut grads = GradStore::default();
        // Row 0 of `a` has gradient, row 2 has none; `b` has no gradient at all.
        let g = Tensor::new(&[[1f32, 0.], [0., 0.], [0., 0.]], &Device::Cpu).unwrap();
        grads.insert(a.as_tensor(), g);
        let ok = Trainable::Only(BTreeMap::from([("a".to_string(), Part::rows([0..1]))]));
        let cov = gradient_coverage(&params, &ok, &grads).unwrap();
        assert_eq!(
            (cov.checked, cov.frozen, cov.problems.len()),
            (1, vec!["b".into()], 0)
        );
        let bad = Trainable::Only(BTreeMap::from([("a".to_string(), Part::rows([2..3]))]));
        assert_eq!(
            gradient_coverage(&params, &bad, &grads)
                .unwrap()
                .problems
                .len(),
            1
        );
        let all = gradient_coverage(&params, &Trainable::All, &grads).unwrap();
        assert_eq!(all.problems, vec!["b: no gradient".to_string()]);
    }
}
