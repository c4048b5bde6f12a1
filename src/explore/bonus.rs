//! i-MENTOR's bonus arithmetic, pure functions of numbers: min-max normalization of the novelty
//! errors, the step decay, and the integration into advantages (`additive`, or `bounded` below
//! the gap to the group's correct samples). The rules and their reasons are in [`super::imentor`]'s
//! module docs; the networks that produce the errors live there too.

use super::imentor::Integration;

/// Min-max normalization of the errors to `[0, max_bonus]` over the batch. When the errors span
/// no range (all equal up to float noise: relative 1e-6), nothing is more novel than anything
/// else and every bonus is 0.
pub fn normalize(errors: &[f32], max_bonus: f64) -> Vec<f32> {
    let lo = errors
        .iter()
        .fold(f64::INFINITY, |m, &e| m.min(f64::from(e)));
    let hi = errors
        .iter()
        .fold(f64::NEG_INFINITY, |m, &e| m.max(f64::from(e)));
    let range = hi - lo;
    // `is_nan` too: an empty batch gives inf − inf.
    if errors.is_empty() || range.is_nan() || range <= 1e-6 * hi.abs().max(lo.abs()) + 1e-30 {
        return vec![0.0; errors.len()];
    }
    errors
        .iter()
        .map(|&e| (max_bonus * (f64::from(e) - lo) / range) as f32)
        .collect()
}

/// Bonus scale at training step `step`: `decay / (decay + step)`; 1 at step 0, 1/2 at `decay`.
pub fn decay_scale(decay: f64, step: u64) -> f64 {
    decay / (decay + step as f64)
}

/// Squashes a bonus `b` below a gap `g > 0`: identity up to `g/2`, then an exponential approach
/// to `g` with matching slope (see the module docs). Zero when there is no gap.
fn soft_cap(b: f64, g: f64) -> f64 {
    if g.is_nan() || g <= 0.0 {
        return 0.0;
    }
    let h = 0.5 * g;
    if b <= h {
        b
    } else {
        h + h * (1.0 - (-(b - h) / h).exp())
    }
}

/// Adds `bonus` to `adv` (laid out group by group, `group_size` per group) by `integration`
/// and returns what was actually added to each sample.
pub fn integrate(
    adv: &mut [f32],
    bonus: &[f32],
    correct: &[bool],
    group_size: usize,
    integration: Integration,
) -> Vec<f32> {
    debug_assert!(adv.len() == bonus.len() && adv.len() == correct.len());
    let mut added = vec![0f32; adv.len()];
    let g = group_size.max(1);
    for ((adv, bonus), (correct, added)) in adv
        .chunks_mut(g)
        .zip(bonus.chunks(g))
        .zip(correct.chunks(g).zip(added.chunks_mut(g)))
    {
        // Smallest advantage of a correct sample, before any bonus.
        let floor = adv
            .iter()
            .zip(correct.iter())
            .filter(|(_, &c)| c)
            .map(|(&a, _)| a)
            .fold(None, |m: Option<f32>, a| Some(m.map_or(a, |m| m.min(a))));
        for i in 0..adv.len() {
            let mut b = bonus[i].max(0.0);
            if b == 0.0 {
                continue;
            }
            if let (Integration::Bounded, Some(floor), false) = (integration, floor, correct[i]) {
                b = soft_cap(f64::from(b), f64::from(floor) - f64::from(adv[i])) as f32;
                // A gap below f32 resolution: the only safe bonus is none.
                if adv[i] + b >= floor {
                    b = 0.0;
                }
            }
            adv[i] += b;
            added[i] = b;
        }
    }
    added
}
