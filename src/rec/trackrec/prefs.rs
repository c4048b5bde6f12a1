//! Preference lists from V's feedback (TrackRec's `sample_preference_data.py`, without its
//! quirks): per prompt, the CoT V rewards most is chosen and every CoT rewarded less is
//! rejected, one list for S-DPO.
//!
//! - reward = V's probability of the prompt's true label (p(Yes) for a liked item, else 1 −
//!   p(Yes)): the judge's `reward = "true_label"`.
//! - chosen = the first CoT with the highest reward; rejected = the CoTs with a strictly lower
//!   reward (one tying with the chosen is neither: it is no worse).
//! - A prompt whose CoTs all tie (identical texts, or V indifferent) gives no preference and is
//!   dropped; so is a prompt with a single CoT. Both are counted, never silently lost.
//!   (TrackRec's "drop prompts whose CoTs are all wrong" filter is a no-op in its code; it is not
//!   reproduced.)

use serde::Serialize;

/// One prompt's preference list: indices into its CoTs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PreferenceList {
    pub prompt: usize,
    pub chosen: usize,
    /// Non-empty.
    pub rejected: Vec<usize>,
}

/// The lists of one round and what was dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Lists {
    pub lists: Vec<PreferenceList>,
    /// Prompts whose CoTs all got the same reward.
    pub dropped_all_tie: usize,
    /// Prompts with fewer than two CoTs.
    pub dropped_single: usize,
}

/// `rewards[p][j]` = reward of CoT j of prompt p.
pub fn preference_lists(rewards: &[Vec<f64>]) -> Lists {
    let mut out = Lists::default();
    for (p, r) in rewards.iter().enumerate() {
        if r.len() < 2 {
            out.dropped_single += 1;
            continue;
        }
        let chosen = (0..r.len()).fold(0, |best, j| if r[j] > r[best] { j } else { best });
        let rejected: Vec<usize> = (0..r.len()).filter(|&j| r[j] < r[chosen]).collect();
        if rejected.is_empty() {
            out.dropped_all_tie += 1;
            continue;
        }
        out.lists.push(PreferenceList {
            prompt: p,
            chosen,
            rejected,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_is_chosen_and_every_worse_one_rejected() {
        let l = preference_lists(&[vec![0.2, 0.9, 0.5, 0.1]]);
        assert_eq!(
            l.lists,
            [PreferenceList {
                prompt: 0,
                chosen: 1,
                rejected: vec![0, 2, 3]
            }]
        );
        assert_eq!((l.dropped_all_tie, l.dropped_single), (0, 0));
    }

    #[test]
    fn ties_single_samples_and_partial_ties() {
        let l = preference_lists(&[
            vec![0.5, 0.5, 0.5],      // all tie: dropped
            vec![0.7],                // one CoT: dropped
            vec![],                   // none: dropped as single
            vec![0.3, 0.8, 0.8, 0.1], // two best tie: the first is chosen, the other neither
        ]);
        assert_eq!(
            l.lists,
            [PreferenceList {
                prompt: 3,
                chosen: 1,
                rejected: vec![0, 3]
            }]
        );
        assert_eq!((l.dropped_all_tie, l.dropped_single), (1, 2));
    }
}
