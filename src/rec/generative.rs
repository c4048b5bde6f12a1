//! Generative recommenders as rankers: a causal LM that writes the next item's SID, turned into
//! full-catalogue rankings that `metrics` scores like any other ranker's.
//!
//! Two rankers over the same model and prompts:
//! - **Constrained beam search** (MiniOneRec, TIGER): B beams under the [`SidTrie`], so every beam
//!   is a whole SID of the catalogue; the ranking is the beams in beam-score order (HF's
//!   `sequences_scores`: length penalty 0 here, all SIDs have the same length, so the score is the
//!   sum of log-probs). A beam stands for its SID's items: collided items form one tied entry.
//!   Beams are distinct SIDs, so a ranking holds up to B entries; items beyond them are unranked
//!   (a miss at every K ≤ B).
//! - **Factorized scoring** (HSRL's score(i) = Π_l p_l(z_l(i))): L forwards per prompt, one per
//!   level. Forward l reads the prompt plus the greedy prefix so far (the most likely code at each
//!   earlier level among the trie's continuations); p_l is the softmax at its last position over
//!   the level-l tokens alone. Every catalogue item is then scored Σ_l log p_l(z_l(i)).
//!   **Approximation**: p_l is conditioned on the greedy prefix, not on the item's own codes
//!   z_<l(i), so levels are treated as independent given the history (as HSRL's heads are, which
//!   see only the context); it is exact for items on the greedy path and, unlike beam search,
//!   ranks the whole catalogue (ties where scores are exactly equal, e.g. collided items).

use std::time::Instant;

use anyhow::{ensure, Context, Result};
use candle_core::Device;

use super::metrics::rank_scores;
use super::sid::SidTable;
use super::trie::SidTrie;
use crate::generate::beam::{beam_search, BeamConfig};
use crate::generate::constraint::Constraint;
use crate::model::decoder::logits_of;
use crate::model::{Decoder, Tokenizer};
use crate::progress::Reporter;

/// Rankings of one ranker over a list of prompts, with what it cost.
#[derive(Clone, Debug, Default)]
pub struct Ranked {
    /// Per prompt, best first; each entry a set of table indices (collided items tie).
    pub rankings: Vec<Vec<Vec<u32>>>,
    /// Beams (or greedy paths) that did not decode to a catalogue item; 0 under the trie.
    pub invalid: usize,
    /// Beams generated (or items scored) in all.
    pub generated: usize,
    pub seconds: f64,
}

impl Ranked {
    /// Prompts ranked per second.
    pub fn prompts_per_second(&self) -> f64 {
        self.rankings.len() as f64 / self.seconds.max(1e-9)
    }
    /// Ranked catalogue entries (beams) per second.
    pub fn items_per_second(&self) -> f64 {
        self.generated as f64 / self.seconds.max(1e-9)
    }
}

/// Constrained beam search with `num_beams` beams for each prompt, `batch` prompts at a time.
#[allow(clippy::too_many_arguments)]
pub fn beam_rankings(
    model: &Decoder,
    tok: &Tokenizer,
    trie: &SidTrie,
    levels: usize,
    prompts: &[Vec<u32>],
    num_beams: usize,
    batch: usize,
    device: &Device,
    report: &dyn Reporter,
) -> Result<Ranked> {
    let cfg = BeamConfig {
        num_beams,
        // L SID tokens, then EOS; a completion suffix would add its tokens (none here).
        max_new_tokens: levels + 1,
        length_penalty: 0.0,
        ..BeamConfig::default()
    };
    let t0 = Instant::now();
    let mut out = Ranked::default();
    report.begin(
        &format!("beam search B={num_beams}"),
        prompts.len() as u64,
        0,
    );
    for chunk in prompts.chunks(batch.max(1)) {
        let results = beam_search(
            model,
            tok,
            chunk,
            &cfg,
            Some(trie as &dyn Constraint),
            device,
        )?;
        for r in results {
            let mut ranking: Vec<Vec<u32>> = Vec::with_capacity(r.beams.len());
            for b in &r.beams {
                out.generated += 1;
                let items = trie.items_of(&b.token_ids);
                if items.is_empty() {
                    out.invalid += 1;
                    continue;
                }
                let entry: Vec<u32> = items.iter().map(|&i| i as u32).collect();
                if !ranking.contains(&entry) {
                    ranking.push(entry);
                }
            }
            out.rankings.push(ranking);
        }
        let secs = t0.elapsed().as_secs_f64();
        report.progress(
            out.rankings.len() as u64,
            &[("items/s", out.generated as f64 / secs.max(1e-9))],
        );
    }
    report.end();
    out.seconds = t0.elapsed().as_secs_f64();
    Ok(out)
}

/// Token ids of each level's codes: `ids[l][c]` is the id of `<{level l}_{c}>`.
pub fn level_token_ids(table: &SidTable, tok: &Tokenizer) -> Result<Vec<Vec<u32>>> {
    (0..table.levels())
        .map(|l| {
            (0..table.sizes()[l] as u32)
                .map(|c| {
                    let t = super::sid::level_token(l, c);
                    tok.token_id(&t).with_context(|| {
                        format!(
                            "the tokenizer has no token `{t}`; hint: add the SID tokens to the \
                             model (`[model] add_tokens`, or `llmrl rec init-model`)"
                        )
                    })
                })
                .collect()
        })
        .collect()
}

/// HSRL's factorized scoring (module docs): full-catalogue rankings, `depth` entries deep.
#[allow(clippy::too_many_arguments)]
pub fn factorized_rankings(
    model: &Decoder,
    table: &SidTable,
    level_ids: &[Vec<u32>],
    trie: &SidTrie,
    prompts: &[Vec<u32>],
    depth: usize,
    device: &Device,
    report: &dyn Reporter,
) -> Result<Ranked> {
    ensure!(
        level_ids.len() == table.levels(),
        "level token ids for {} levels, the table has {}",
        level_ids.len(),
        table.levels()
    );
    let t0 = Instant::now();
    let mut out = Ranked::default();
    report.begin("factorized scoring", prompts.len() as u64, 0);
    for (k, prompt) in prompts.iter().enumerate() {
        let mut ids = prompt.clone();
        let mut path: Vec<u32> = Vec::new();
        // logp[l][c]: log p_l(code c) at the greedy prefix.
        let mut logp: Vec<Vec<f32>> = Vec::with_capacity(level_ids.len());
        for lvl in level_ids {
            let logits = logits_of(model, &ids, device)?; // (T, V)
            let last = logits.get(ids.len() - 1)?.to_vec1::<f32>()?; // (V,)
            let z: Vec<f32> = lvl.iter().map(|&t| last[t as usize]).collect();
            let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = m + z.iter().map(|x| (x - m).exp()).sum::<f32>().ln();
            let lp: Vec<f32> = z.iter().map(|x| x - lse).collect();
            // The greedy step stays inside the catalogue: the best code the trie allows here.
            let allowed = trie.allowed(k, &path);
            let next = lvl
                .iter()
                .enumerate()
                .filter(|(_, &t)| allowed.contains(t))
                .max_by(|a, b| lp[a.0].total_cmp(&lp[b.0]))
                .map(|(_, &t)| t);
            logp.push(lp);
            match next {
                Some(t) => {
                    path.push(t);
                    ids.push(t);
                }
                None => out.invalid += 1,
            }
        }
        let scores: Vec<f32> = (0..table.len())
            .map(|i| {
                table
                    .codes(i)
                    .iter()
                    .enumerate()
                    .map(|(l, &c)| logp[l][c as usize])
                    .sum()
            })
            .collect();
        out.generated += table.len();
        out.rankings.push(rank_scores(&scores, depth));
        if k % 16 == 15 {
            report.progress(k as u64 + 1, &[]);
        }
    }
    report.end();
    out.seconds = t0.elapsed().as_secs_f64();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;
    use crate::rec::scratch::{init_model, ScratchConfig};
    use candle_core::DType;
    use proptest::prelude::*;

    fn tiny(
        table: &SidTable,
        seed: u64,
    ) -> (crate::model::ModelConfig, crate::model::Params, Tokenizer) {
        let cfg = ScratchConfig {
            layers: 1,
            hidden: 16,
            heads: 2,
            kv_heads: 2,
            // Large weights: a peaked, seed-dependent policy (beams then differ in score).
            initializer_range: 0.5,
            seed,
            ..Default::default()
        };
        init_model(table, &cfg).unwrap()
    }

    fn table_strategy() -> impl Strategy<Value = SidTable> {
        (2usize..4, 2u32..4, 2usize..9).prop_flat_map(|(levels, k, n)| {
            proptest::collection::vec(proptest::collection::vec(0..k, levels), n).prop_map(
                move |codes| {
                    let ids = (0..codes.len()).map(|i| format!("i{i}")).collect();
                    SidTable::new(ids, codes, vec![k as usize; levels]).unwrap()
                },
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        /// Trie-constrained beams are B distinct SIDs of the catalogue (all of them when B is
        /// the number of SIDs), each decoding to its real items.
        #[test]
        fn constrained_beams_are_distinct_real_items(
            table in table_strategy(), seed in 0u64..1000, extra in 0usize..3,
        ) {
            let (cfg, params, tok) = tiny(&table, seed);
            let dec = Decoder::new(&cfg, &params, crate::model::Mode::Infer).unwrap();
            let trie = SidTrie::new(&table, &tok, "", &tok.eos_ids).unwrap();
            let n_sids = trie.len();
            let b = (1 + extra).min(n_sids);
            let prompt_a = tok.encode(&table.sid_string(0), true).unwrap();
            let prompt_b = tok.encode(&format!("{}, {}", table.sid_string(1), table.sid_string(0)), true).unwrap();
            for beams in [b, n_sids] {
                let r = beam_rankings(&dec, &tok, &trie, table.levels(), &[prompt_a.clone(), prompt_b.clone()],
                    beams, 2, &Device::Cpu, &Silent).unwrap();
                prop_assert_eq!(r.invalid, 0);
                for ranking in &r.rankings {
                    prop_assert_eq!(ranking.len(), beams);
                    let mut seen = std::collections::HashSet::new();
                    for entry in ranking {
                        // One entry = one SID's items (collided items together).
                        let codes = table.codes(entry[0] as usize);
                        prop_assert_eq!(table.items_with(codes).iter().map(|&i| i as u32).collect::<Vec<_>>(), entry.clone());
                        prop_assert!(seen.insert(codes.to_vec()), "duplicate SID");
                    }
                }
            }
        }
    }

    #[test]
    fn factorized_scores_follow_the_greedy_path() {
        let table = SidTable::new(
            (0..5).map(|i| i.to_string()).collect(),
            vec![vec![0, 0], vec![0, 1], vec![1, 0], vec![1, 1], vec![1, 1]],
            vec![2, 2],
        )
        .unwrap();
        let (cfg, params, tok) = tiny(&table, 7);
        let dec = Decoder::new(&cfg, &params, crate::model::Mode::Infer).unwrap();
        let trie = SidTrie::new(&table, &tok, "", &tok.eos_ids).unwrap();
        let ids = level_token_ids(&table, &tok).unwrap();
        let prompt = tok.encode("<a_0><b_1>", true).unwrap();
        let r = factorized_rankings(
            &dec,
            &table,
            &ids,
            &trie,
            std::slice::from_ref(&prompt),
            10,
            &Device::Cpu,
            &Silent,
        )
        .unwrap();
        // Every item is ranked; the collided items 3 and 4 tie (equal scores).
        let ranking = &r.rankings[0];
        assert_eq!(ranking.iter().map(Vec::len).sum::<usize>(), 5);
        assert!(ranking.iter().any(|e| e == &vec![3, 4]));
        // By hand: level-restricted log-softmax at the prompt, then after the greedy code.
        let level_lp = |seq: &[u32], lvl: &[u32]| -> Vec<f32> {
            let lg = logits_of(&dec, seq, &Device::Cpu).unwrap();
            let last = lg
                .get(seq.len() - 1)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let z: Vec<f32> = lvl.iter().map(|&t| last[t as usize]).collect();
            let lse = z.iter().map(|x| x.exp()).sum::<f32>().ln();
            z.iter().map(|x| x - lse).collect()
        };
        let p1 = level_lp(&prompt, &ids[0]);
        let g = if p1[0] >= p1[1] { 0 } else { 1 };
        let mut seq = prompt.clone();
        seq.push(ids[0][g]);
        let p2 = level_lp(&seq, &ids[1]);
        let mut want: Vec<(f32, usize)> = (0..5)
            .map(|i| {
                (
                    p1[table.codes(i)[0] as usize] + p2[table.codes(i)[1] as usize],
                    i,
                )
            })
            .collect();
        want.sort_by(|a, b| b.0.total_cmp(&a.0));
        assert_eq!(ranking[0][0] as usize, want[0].1);
    }
}
