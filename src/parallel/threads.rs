//! In-process data parallel: N workers as threads of this process, one [`ThreadComm`] each,
//! meeting at a shared exchange (a generation-counted barrier that hands every rank all ranks'
//! deposits). Sums are taken in rank order by every rank alike, so results are deterministic
//! and identical on every rank. For tests and for CPUs with memory for N replicas; GPUs use
//! the `nccl` feature.

use std::any::Any;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use anyhow::{anyhow, Result};
use candle_core::Tensor;

use super::Comm;

type Deposit = Arc<dyn Any + Send + Sync>;

/// The error a worker's collective returns when another worker failed (the driver reports the
/// failing worker's own error instead).
#[derive(Debug, thiserror::Error)]
#[error("another data-parallel worker failed")]
pub struct PeerFailed;

#[derive(Default)]
struct State {
    generation: u64,
    arrived: usize,
    slots: Vec<Option<Deposit>>,
    result: Option<Arc<Vec<Deposit>>>,
    failed: bool,
}

struct Exchange {
    world: usize,
    state: Mutex<State>,
    turn: Condvar,
}

impl Exchange {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker that panicked while holding the lock poisons it; the state stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Deposit `mine` as `rank`'s and wait for every rank's: all deposits, in rank order.
    fn exchange(&self, rank: usize, mine: Deposit) -> Result<Arc<Vec<Deposit>>> {
        let mut s = self.lock();
        if s.failed {
            return Err(PeerFailed.into());
        }
        let generation = s.generation;
        s.slots[rank] = Some(mine);
        s.arrived += 1;
        if s.arrived == self.world {
            let all: Vec<Deposit> = s
                .slots
                .iter_mut()
                .map(|d| d.take().expect("deposited"))
                .collect();
            let all = Arc::new(all);
            s.result = Some(all.clone());
            s.arrived = 0;
            s.generation += 1;
            self.turn.notify_all();
            return Ok(all);
        }
        while s.generation == generation && !s.failed {
            s = self.turn.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if s.generation == generation {
            return Err(PeerFailed.into());
        }
        // The next round cannot complete before this rank deposits again, so `result` is ours.
        Ok(s.result.clone().expect("a completed round"))
    }

    fn fail(&self) {
        self.lock().failed = true;
        self.turn.notify_all();
    }
}

/// One worker's end of the in-process exchange.
pub struct ThreadComm {
    rank: usize,
    exchange: Arc<Exchange>,
}

impl ThreadComm {
    /// The `world` communicators of one group, rank 0 first.
    pub fn group(world: usize) -> Vec<ThreadComm> {
        let exchange = Arc::new(Exchange {
            world,
            state: Mutex::new(State {
                slots: vec![None; world],
                ..State::default()
            }),
            turn: Condvar::new(),
        });
        (0..world)
            .map(|rank| ThreadComm {
                rank,
                exchange: exchange.clone(),
            })
            .collect()
    }

    /// Release every worker waiting in (or later entering) a collective with [`PeerFailed`].
    pub fn fail(&self) {
        self.exchange.fail();
    }

    fn exchange<T: Any + Send + Sync>(&self, mine: T) -> Result<Vec<Arc<T>>> {
        self.exchange
            .exchange(self.rank, Arc::new(mine))?
            .iter()
            .map(|d| {
                d.clone()
                    .downcast::<T>()
                    .map_err(|_| anyhow!("data parallel: ranks called different collectives"))
            })
            .collect()
    }
}

impl Comm for ThreadComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.exchange.world
    }
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        let all = self.exchange(t.clone())?;
        let mut acc = (*all[0]).clone();
        for x in &all[1..] {
            acc = (acc + &**x)?;
        }
        Ok(acc)
    }
    fn all_reduce_sum_f64(&self, xs: &[f64]) -> Result<Vec<f64>> {
        let all = self.exchange(xs.to_vec())?;
        anyhow::ensure!(
            all.iter().all(|v| v.len() == xs.len()),
            "data parallel: ranks all-reduced vectors of different lengths"
        );
        let mut acc = vec![0.0; xs.len()];
        for v in &all {
            for (a, x) in acc.iter_mut().zip(v.iter()) {
                *a += x;
            }
        }
        Ok(acc)
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .exchange(mine.to_vec())?
            .iter()
            .map(|b| b.to_vec())
            .collect())
    }
    fn broadcast_bytes(&self, root: usize, data: &[u8]) -> Result<Vec<u8>> {
        let all = self.exchange(data.to_vec())?;
        Ok(all[root].to_vec())
    }
    fn barrier(&self) -> Result<()> {
        self.exchange(())?;
        Ok(())
    }
}

/// Run `work` on `world` workers (rank 0 on the calling thread, the others on scoped threads)
/// and wait for all. A worker that fails or panics releases the others; the error returned is
/// the lowest rank's own (not a peer's "another worker failed").
pub fn run<F>(world: usize, work: F) -> Result<()>
where
    F: Fn(&ThreadComm) -> Result<()> + Sync,
{
    let comms = ThreadComm::group(world);
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let run_one = |c: &ThreadComm| {
            // Fails the group if `work` panics too (the guard drops while unwinding).
            struct FailOnUnwind<'a>(&'a ThreadComm);
            impl Drop for FailOnUnwind<'_> {
                fn drop(&mut self) {
                    if std::thread::panicking() {
                        self.0.fail();
                    }
                }
            }
            let _guard = FailOnUnwind(c);
            let r = work(c);
            if r.is_err() {
                c.fail();
            }
            r
        };
        let handles: Vec<_> = comms[1..]
            .iter()
            .map(|c| scope.spawn(move || run_one(c)))
            .collect();
        let mut out = vec![run_one(&comms[0])];
        for (i, h) in handles.into_iter().enumerate() {
            out.push(
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("data-parallel worker {} panicked", i + 1))),
            );
        }
        out
    });
    let mut peer_failed = None;
    for r in results {
        match r {
            Err(e) if e.is::<PeerFailed>() => peer_failed = Some(e),
            Err(e) => return Err(e),
            Ok(()) => {}
        }
    }
    peer_failed.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn collectives_see_every_rank_in_rank_order() {
        let out = Mutex::new(vec![None; 3]);
        run(3, |c| {
            let r = c.rank() as f64;
            let sum = c.all_reduce_sum_f64(&[r, 1.0])?;
            assert_eq!(sum, [3.0, 3.0]);
            let t = Tensor::new(&[r as f32, 2.0 * r as f32], &Device::Cpu)?;
            let t = c.all_reduce_sum(&t)?;
            assert_eq!(t.to_vec1::<f32>()?, [3.0, 6.0]);
            let all = c.all_gather_bytes(&vec![c.rank() as u8; c.rank()])?;
            assert_eq!(all, [vec![], vec![1], vec![2, 2]]);
            let b = c.broadcast_bytes(2, &[c.rank() as u8])?;
            c.barrier()?;
            out.lock().unwrap()[c.rank()] = Some(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(out.into_inner().unwrap(), vec![Some(vec![2]); 3]);
    }

    #[test]
    fn a_failing_worker_releases_the_others_and_its_error_is_reported() {
        let err = run(3, |c| {
            if c.rank() == 1 {
                anyhow::bail!("rank 1 broke");
            }
            // Ranks 0 and 2 would wait for rank 1 forever.
            c.barrier()?;
            c.barrier()
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "rank 1 broke");
        let err = run(2, |c| {
            if c.rank() == 1 {
                panic!("boom");
            }
            c.barrier()
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("panicked") || err.is::<PeerFailed>(),
            "{err}"
        );
    }
}
