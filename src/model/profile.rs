//! Wall-time profiling of decoder forwards by phase (benchmarks only: a decoder reads no clock
//! unless built with [`super::Decoder::with_profile`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// What a profiled forward's wall time is split into (see [`PhaseTimes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Whole decode-step forwards (one new slot per row), embedding to final norm.
    DecodeForward,
    /// The layers' projections (q, k, v, o, gate, up, down) within decode steps.
    Matmul,
    /// Attention within decode steps.
    Attention,
    /// KV cache appends within decode steps.
    Cache,
    /// Whole forwards of several slots per row (prefill; not split further).
    Prefill,
    /// The LM head (every `logits` call).
    LmHead,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::DecodeForward,
        Phase::Matmul,
        Phase::Attention,
        Phase::Cache,
        Phase::Prefill,
        Phase::LmHead,
    ];
}

/// Accumulated wall time per [`Phase`] and the number of decode steps, for benchmarks. A decoder
/// reads no clock unless built with [`Decoder::with_profile`]; CPU ops are synchronous, so the
/// times are the ops' (on CUDA they would be launch times).
#[derive(Debug, Default)]
pub struct PhaseTimes {
    nanos: [AtomicU64; 6],
    pub(crate) decode_steps: AtomicU64,
}

impl PhaseTimes {
    /// Seconds spent in `phase` so far.
    pub fn seconds(&self, phase: Phase) -> f64 {
        self.nanos[phase as usize].load(Ordering::Relaxed) as f64 * 1e-9
    }

    pub fn decode_steps(&self) -> u64 {
        self.decode_steps.load(Ordering::Relaxed)
    }

    pub fn reset(&self) {
        for n in &self.nanos {
            n.store(0, Ordering::Relaxed);
        }
        self.decode_steps.store(0, Ordering::Relaxed);
    }

    pub(crate) fn add(&self, phase: Phase, since: Instant) {
        let ns = since.elapsed().as_nanos() as u64;
        self.nanos[phase as usize].fetch_add(ns, Ordering::Relaxed);
    }
}

/// Runs `f`, adding its wall time to `phase` when profiling.
#[inline(always)]
pub(crate) fn timed<R>(prof: Option<&PhaseTimes>, phase: Phase, f: impl FnOnce() -> R) -> R {
    match prof {
        None => f(),
        Some(p) => {
            let t0 = Instant::now();
            let r = f();
            p.add(phase, t0);
            r
        }
    }
}
