//! The rollout's data-parallel gather: every rank's judged samples, in rank order, over the
//! process group's wire format.

use anyhow::Result;

use crate::generate::Completion;
use crate::parallel::{self, wire, Comm};
use crate::reward::Score;

/// Every rank's judged samples (with the sampler's log-probs of an approximate rollout), in
/// rank order (= global prompt order, the shards being contiguous); the identity at world size 1.
pub(super) fn gather(
    comm: &dyn Comm,
    completions: Vec<Completion>,
    scores: Vec<Score>,
    padded: Vec<bool>,
    rollout_logp: Vec<Vec<f32>>,
) -> Result<Judged> {
    if comm.world_size() == 1 {
        return Ok((completions, scores, padded, rollout_logp));
    }
    let mine = (completions, scores, padded, rollout_logp);
    let parts = parallel::all_gather(comm, &mine, write_samples, read_samples)?;
    let (mut c, mut s, mut p, mut r) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for part in parts {
        c.extend(part.0);
        s.extend(part.1);
        p.extend(part.2);
        r.extend(part.3);
    }
    Ok((c, s, p, r))
}

pub(super) type Judged = (Vec<Completion>, Vec<Score>, Vec<bool>, Vec<Vec<f32>>);

/// Per-token vectors as raw bits (log-probs may be −inf), the rest as JSON.
fn write_samples(
    (completions, scores, padded, rollout_logp): &Judged,
    w: &mut wire::Writer,
) -> Result<()> {
    w.u64(completions.len() as u64);
    for (((c, s), p), rl) in completions.iter().zip(scores).zip(padded).zip(rollout_logp) {
        w.f32s(rl);
        w.u32s(&c.token_ids);
        w.f32s(&c.logprobs);
        w.f32s(&c.mean_logprobs);
        w.f32s(&c.entropies);
        let head = Completion {
            token_ids: vec![],
            logprobs: vec![],
            mean_logprobs: vec![],
            entropies: vec![],
            ..c.clone()
        };
        w.json(&head)?;
        w.f32s(&[s.value]);
        w.json(&Score {
            value: 0.0,
            ..s.clone()
        })?;
        w.u64(u64::from(*p));
    }
    Ok(())
}

fn read_samples(r: &mut wire::Reader) -> Result<Judged> {
    let n = r.u64()? as usize;
    let mut out: Judged = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        out.3.push(r.f32s()?);
        let (token_ids, logprobs, mean_logprobs, entropies) =
            (r.u32s()?, r.f32s()?, r.f32s()?, r.f32s()?);
        let head: Completion = r.json()?;
        out.0.push(Completion {
            token_ids,
            logprobs,
            mean_logprobs,
            entropies,
            ..head
        });
        let value = r.f32s()?.first().copied().unwrap_or(0.0);
        let score: Score = r.json()?;
        out.1.push(Score { value, ..score });
        out.2.push(r.u64()? != 0);
    }
    Ok(out)
}
