//! Data parallel: the communication seam between the ranks of one training run.
//!
//! A run of world size N holds N replicas of the policy (ranks). Each rank rolls out its shard
//! of the step's prompts (whole groups: GRPO's advantages are per group), and the ranks meet in
//! a few collectives of [`Comm`]: the judged samples are gathered, so advantages, the
//! exploration bonus (i-MENTOR's predictor), metrics and dumps see the whole batch on every
//! rank; each rank runs the forward/backward of the sequences it generated, with the loss
//! normalizers of the whole mini-batch; and the gradients are summed once per optimizer step
//! ([`all_reduce_grads`], called by `train::update::step_optimizer`, the one all-reduce point).
//! Every rank then applies the same update to the same weights, so only rank 0 writes logs and
//! checkpoints, and a checkpoint resumes at any world size.
//!
//! Implementations: [`Single`] (world size 1: no communication), [`threads::ThreadComm`] (N
//! workers as threads of this process, `[train] world_size = N`; sums in rank order, so a
//! result never depends on thread timing), and `nccl::NcclComm` (one process per GPU, behind
//! the `nccl` feature; rank and world size from `RANK`/`WORLD_SIZE`/`LOCAL_RANK`).

pub mod threads;
pub mod wire;

#[cfg(feature = "nccl")]
pub mod nccl;

use std::ops::Range;

use anyhow::{ensure, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

pub use threads::ThreadComm;

/// The collectives the trainer needs. Every rank calls the same collectives in the same order
/// (with equal lengths where a length is given); a rank that fails makes the others' next
/// collective fail instead of waiting forever.
pub trait Comm: Send + Sync {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// The element-wise sum of every rank's `t` (same shape and dtype on every rank).
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor>;
    /// The element-wise sum of every rank's `xs` (same length on every rank).
    fn all_reduce_sum_f64(&self, xs: &[f64]) -> Result<Vec<f64>>;
    /// Every rank's bytes (any length), in rank order.
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>>;
    /// Rank `root`'s bytes, on every rank (the others' `data` is ignored).
    fn broadcast_bytes(&self, root: usize, data: &[u8]) -> Result<Vec<u8>>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;
}

/// World size 1: every collective is the identity.
pub struct Single;

impl Comm for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }
    fn all_reduce_sum_f64(&self, xs: &[f64]) -> Result<Vec<f64>> {
        Ok(xs.to_vec())
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![mine.to_vec()])
    }
    fn broadcast_bytes(&self, _root: usize, data: &[u8]) -> Result<Vec<u8>> {
        Ok(data.to_vec())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// The contiguous share of `n` items (prompts of a step) that `rank` of `world` works on: near
/// equal parts in rank order, so concatenating the ranks' parts gives back 0..n.
pub fn shard(n: usize, rank: usize, world: usize) -> Range<usize> {
    let world = world.max(1);
    let (base, extra) = (n / world, n % world);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// A world size the batch splits into: every worker rolls out the same number of whole prompts.
pub fn check_world_size(world: usize, prompts_per_step: usize) -> Result<()> {
    ensure!(world >= 1, "world_size must be ≥ 1, got {world}");
    ensure!(
        prompts_per_step.is_multiple_of(world),
        "world_size = {world} does not divide prompts_per_step = {prompts_per_step}: each worker \
         rolls out the same number of whole prompts (a prompt's group stays on one worker); \
         hint: make prompts_per_step a multiple of the world size"
    );
    Ok(())
}

/// A process's place in a multi-process launch, from the environment variables torchrun sets.
#[derive(Clone, Debug, PartialEq)]
pub struct EnvRank {
    pub rank: usize,
    pub world_size: usize,
    /// The GPU of this process on its machine.
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
}

impl EnvRank {
    /// `RANK`, `WORLD_SIZE`, `LOCAL_RANK` (default: `RANK`), `MASTER_ADDR` (default
    /// 127.0.0.1), `MASTER_PORT` (default 29500); `None` when `WORLD_SIZE` is unset.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`EnvRank::from_env`] over any variable lookup.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let Some(world) = var("WORLD_SIZE") else {
            return Ok(None);
        };
        let num = |k: &str, v: String| -> Result<usize> {
            v.trim()
                .parse()
                .with_context(|| format!("environment variable {k}={v:?} is not a number"))
        };
        let world_size = num("WORLD_SIZE", world)?;
        let rank = num(
            "RANK",
            var("RANK").context("WORLD_SIZE is set but RANK is not")?,
        )?;
        let local_rank = match var("LOCAL_RANK") {
            Some(v) => num("LOCAL_RANK", v)?,
            None => rank,
        };
        ensure!(
            world_size >= 1 && rank < world_size,
            "RANK={rank} is not below WORLD_SIZE={world_size}"
        );
        let master_port = match var("MASTER_PORT") {
            Some(v) => v
                .trim()
                .parse()
                .with_context(|| format!("MASTER_PORT={v:?} is not a port"))?,
            None => 29500,
        };
        Ok(Some(Self {
            rank,
            world_size,
            local_rank,
            master_addr: var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into()),
            master_port,
        }))
    }
}

/// This process's place when it was launched as one of several (`scripts/launch_nccl.sh`, or
/// torchrun-style variables with `WORLD_SIZE` > 1); `None` for a lone process. A build without
/// the `nccl` feature refuses such a launch rather than run N unrelated copies into one run
/// directory.
pub fn launched() -> Result<Option<EnvRank>> {
    let Some(env) = EnvRank::from_env()? else {
        return Ok(None);
    };
    if env.world_size == 1 {
        return Ok(None);
    }
    #[cfg(not(feature = "nccl"))]
    anyhow::bail!(
        "WORLD_SIZE={} is set, but this build has no `nccl` feature; hint: one process per GPU \
         needs `FEATURES=nccl scripts/build_cuda.sh`, and workers on this machine's CPU are \
         `[train] world_size = N` in one process",
        env.world_size
    );
    #[cfg(feature = "nccl")]
    Ok(Some(env))
}

/// Sum the accumulated gradients of `params` over the ranks, in place: after it every rank
/// holds the gradient of the whole mini-batch. A parameter no rank has a gradient for stays
/// without one (the optimizer then leaves it alone, as with one worker); one that only some
/// ranks have counts as zero on the others.
pub fn all_reduce_grads(
    comm: &dyn Comm,
    params: &[(String, Var)],
    grads: &mut GradStore,
) -> Result<()> {
    if comm.world_size() == 1 {
        return Ok(());
    }
    let present: Vec<f64> = params
        .iter()
        .map(|(_, v)| f64::from(u8::from(grads.get(v.as_tensor()).is_some())))
        .collect();
    let present = comm.all_reduce_sum_f64(&present)?;
    for ((_, var), anywhere) in params.iter().zip(present) {
        if anywhere == 0.0 {
            continue;
        }
        let t = var.as_tensor();
        let mine = match grads.remove(t) {
            Some(g) => g,
            None => t.zeros_like()?,
        };
        grads.insert(t, comm.all_reduce_sum(&mine)?);
    }
    Ok(())
}

/// Every rank's `mine`, in rank order, through the byte gather: `enc` writes one value,
/// `dec` reads it back.
pub fn all_gather<T>(
    comm: &dyn Comm,
    mine: &T,
    enc: impl Fn(&T, &mut wire::Writer) -> Result<()>,
    dec: impl Fn(&mut wire::Reader) -> Result<T>,
) -> Result<Vec<T>> {
    let mut w = wire::Writer::default();
    enc(mine, &mut w)?;
    comm.all_gather_bytes(&w.finish())?
        .iter()
        .map(|b| {
            let mut r = wire::Reader::new(b);
            let v = dec(&mut r)?;
            r.finish()?;
            Ok(v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batch_in_rank_order() {
        for (n, world) in [(8, 2), (8, 4), (7, 3), (2, 2), (5, 1)] {
            let parts: Vec<Range<usize>> = (0..world).map(|r| shard(n, r, world)).collect();
            let flat: Vec<usize> = parts.iter().flat_map(|p| p.clone()).collect();
            assert_eq!(flat, (0..n).collect::<Vec<_>>(), "{n} over {world}");
        }
        assert_eq!(shard(8, 1, 2), 4..8);
        assert_eq!(shard(7, 0, 3), 0..3);
        assert_eq!(shard(7, 2, 3), 5..7);
    }

    #[test]
    fn launch_variables_are_read_like_torchrun_sets_them() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(EnvRank::from_vars(env(&[])).unwrap(), None);
        let e = EnvRank::from_vars(env(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "2"),
            ("LOCAL_RANK", "0"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((e.rank, e.world_size, e.local_rank), (2, 4, 0));
        assert_eq!(
            (e.master_addr.as_str(), e.master_port),
            ("127.0.0.1", 29500)
        );
        assert!(EnvRank::from_vars(env(&[("WORLD_SIZE", "2")])).is_err());
        assert!(EnvRank::from_vars(env(&[("WORLD_SIZE", "2"), ("RANK", "2")])).is_err());
        assert!(EnvRank::from_vars(env(&[("WORLD_SIZE", "x"), ("RANK", "0")])).is_err());
        assert!(check_world_size(2, 4).is_ok());
        let e = check_world_size(3, 4).unwrap_err().to_string();
        assert!(
            e.contains("world_size = 3") && e.contains("prompts_per_step = 4"),
            "{e}"
        );
    }
}
