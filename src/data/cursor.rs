//! Deterministic epoch sampler: which dataset rows the next batch uses.
//!
//! Each epoch visits every row once in an order fixed by `(seed, epoch)` (ChaCha8 seeded with
//! `seed`, stream `epoch`, then rand's Fisher-Yates `shuffle`), so the whole sequence is a pure
//! function of the seed and the dataset size. The cursor is three integers and serializes into a
//! checkpoint; a resumed run continues with exactly the rows an uninterrupted run would have used
//! (nanochat and verl restore their dataloader state the same way).
//!
//! Not here: `limit`, filtering, or per-rank sharding (the trainer slices the dataset first).
//! The order is pinned to rand 0.9's `shuffle`; changing the rand version may change it.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Position in the shuffled stream of row indices: `index` rows of epoch `epoch` are used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCursor {
    pub epoch: u64,
    pub index: usize,
    pub seed: u64,
}

impl DataCursor {
    pub fn new(seed: u64) -> Self {
        Self {
            epoch: 0,
            index: 0,
            seed,
        }
    }

    /// The row order of `epoch` for a dataset of `n_examples` rows.
    pub fn permutation(seed: u64, epoch: u64, n_examples: usize) -> Vec<usize> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(epoch);
        let mut order: Vec<usize> = (0..n_examples).collect();
        order.shuffle(&mut rng);
        order
    }

    /// The next `batch` row indices, moving to the next epoch (and its new order) when the
    /// current one is used up, so a batch may straddle two epochs. An empty dataset yields an
    /// empty batch (the trainer rejects empty datasets before it gets here).
    pub fn next_batch(&mut self, n_examples: usize, batch: usize) -> Vec<usize> {
        if n_examples == 0 {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(batch);
        let mut order = None;
        while out.len() < batch {
            if self.index >= n_examples {
                self.epoch += 1;
                self.index = 0;
                order = None;
            }
            let order =
                order.get_or_insert_with(|| Self::permutation(self.seed, self.epoch, n_examples));
            let take = (batch - out.len()).min(n_examples - self.index);
            out.extend_from_slice(&order[self.index..self.index + take]);
            self.index += take;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_epoch_is_a_permutation_and_epochs_differ() {
        let mut c = DataCursor::new(7);
        let e0 = c.next_batch(10, 10);
        let e1 = c.next_batch(10, 10);
        for e in [&e0, &e1] {
            let mut s = e.clone();
            s.sort_unstable();
            assert_eq!(s, (0..10).collect::<Vec<_>>());
        }
        assert_ne!(e0, e1, "a new epoch reshuffles");
        assert_eq!((c.epoch, c.index), (1, 10));
    }

    #[test]
    fn batches_straddle_epochs_in_order() {
        let n = 7;
        let mut c = DataCursor::new(3);
        let stream: Vec<usize> = (0..6).flat_map(|_| c.next_batch(n, 5)).collect(); // 30 rows
        let expected: Vec<usize> = (0..5)
            .flat_map(|e| DataCursor::permutation(3, e, n))
            .take(30)
            .collect();
        assert_eq!(stream, expected);
        assert_eq!((c.epoch, c.index), (4, 2)); // 30 = 4 * 7 + 2
                                                // A batch larger than the dataset wraps more than once.
        let mut big = DataCursor::new(3);
        assert_eq!(big.next_batch(n, 16), expected[..16]);
    }

    #[test]
    fn deterministic_and_seed_dependent() {
        let run = |seed| {
            let mut c = DataCursor::new(seed);
            (0..5)
                .flat_map(|_| c.next_batch(100, 32))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn resume_from_serialized_cursor_continues_the_same_sequence() {
        let mut a = DataCursor::new(11);
        for _ in 0..3 {
            a.next_batch(13, 4);
        }
        let saved = serde_json::to_string(&a).unwrap();
        let mut b: DataCursor = serde_json::from_str(&saved).unwrap();
        assert_eq!(a, b);
        let cont: Vec<usize> = (0..6).flat_map(|_| a.next_batch(13, 4)).collect();
        let resumed: Vec<usize> = (0..6).flat_map(|_| b.next_batch(13, 4)).collect();
        assert_eq!(cont, resumed);
    }

    #[test]
    fn empty_dataset_gives_empty_batch() {
        let mut c = DataCursor::new(0);
        assert!(c.next_batch(0, 4).is_empty());
        assert_eq!(c, DataCursor::new(0));
    }
}
