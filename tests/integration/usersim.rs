//! The user simulator end to end on tiny synthetic data: the keyword pass's cache survives a
//! kill, the simulator is deterministic under a seed, every edge case and bad input gets a
//! vote or a message (never a panic), and an episode's history is its own user's.

use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use llmrl::data::Example;
use llmrl::progress::{Recorder, Silent};
use llmrl::rec::items::Item;
use llmrl::rec::usersim::judge::{SimReward, UserSimJudge};
use llmrl::rec::usersim::profile::{self, BuildConfig, ItemProfile, TextGenerator};
use llmrl::rec::usersim::prompt::PromptTemplate;
use llmrl::rec::usersim::ratings::{self, Rating, Scale};
use llmrl::rec::usersim::stat::MfConfig;
use llmrl::rec::usersim::table::ProfileTable;
use llmrl::rec::usersim::{EnvConfig, Episode, Simulator};
use llmrl::reward::Verifier;

const PROMPT: &str =
    "### system\nList keywords.\n### user\nMovie: {item}\n### assistant\nKeywords:\n";

/// Answers by the item's text; counts the prompts it was asked.
struct Scripted {
    asked: Cell<usize>,
}

impl TextGenerator for Scripted {
    fn fingerprint(&self) -> String {
        "scripted v1".into()
    }
    fn render(&self, t: &PromptTemplate, item: &str) -> Result<String> {
        Ok(format!("{}{item}", t.answer_prefix))
    }
    fn complete(&mut self, prompts: &[String]) -> Result<Vec<(String, String)>> {
        self.asked.set(self.asked.get() + prompts.len());
        Ok(prompts
            .iter()
            .map(|p| {
                // Item 3's answer is malformed on purpose.
                if p.contains("film 3") {
                    ("I cannot answer that.".into(), "eos".into())
                } else {
                    let n = p
                        .split("film ")
                        .nth(1)
                        .and_then(|x| x.split(';').next())
                        .unwrap_or("");
                    (
                        format!(" k{n}\nPros: fun, p{n}\nCons: slow, c{n}"),
                        "eos".into(),
                    )
                }
            })
            .collect())
    }
}

fn items(n: usize) -> Vec<Item> {
    (0..n)
        .map(|i| Item {
            id: i.to_string(),
            title: format!("film {i}"),
            parts: vec![(
                "genres",
                if i.is_multiple_of(2) {
                    "Comedy".into()
                } else {
                    "Drama".into()
                },
            )],
        })
        .collect()
}

fn run(dir: &Path, items: &[Item], gen: &mut Scripted) -> Vec<ItemProfile> {
    let t = PromptTemplate::parse(PROMPT).unwrap();
    let cfg = BuildConfig { batch_size: 3 };
    profile::build_profiles(items, &t, gen, &dir.join("llm_cache.jsonl"), &cfg, &Silent)
        .unwrap()
        .0
}

#[test]
fn the_keyword_pass_resumes_after_a_kill_and_loses_nothing() {
    let d = tempfile::tempdir().unwrap();
    let its = items(10);
    let mut gen = Scripted {
        asked: Cell::new(0),
    };
    let full = run(d.path(), &its, &mut gen);
    assert_eq!(gen.asked.get(), 10);
    assert_eq!(full[1].pros, ["fun", "p1"]);
    assert_eq!(full[1].category, ["drama"]);
    // The malformed answer: empty lists and the reason, not an error.
    assert!(full[3].pros.is_empty() && full[3].reason.as_deref().unwrap().contains("no `pros:`"));

    // A kill mid-write: 4 whole lines, then half of the 5th.
    let cache = d.path().join("llm_cache.jsonl");
    let text = std::fs::read_to_string(&cache).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let cut = format!(
        "{}\n{}",
        lines[..4].join("\n"),
        &lines[4][..lines[4].len() / 2]
    );
    std::fs::write(&cache, cut).unwrap();
    let rec = Recorder::default();
    let mut gen2 = Scripted {
        asked: Cell::new(0),
    };
    let t = PromptTemplate::parse(PROMPT).unwrap();
    let (again, generated) = profile::build_profiles(
        &its,
        &t,
        &mut gen2,
        &cache,
        &BuildConfig { batch_size: 4 },
        &rec,
    )
    .unwrap();
    assert_eq!(
        (gen2.asked.get(), generated),
        (6, 6),
        "only the unanswered items are asked"
    );
    assert_eq!(again, full);
    let said = rec.lines().join("\n");
    assert!(
        said.contains("incomplete last line") && said.contains("begin keywords 4/10"),
        "{said}"
    );
    // Every line of the cache is whole again; a third run asks nothing.
    let text = std::fs::read_to_string(&cache).unwrap();
    assert_eq!(text.lines().count(), 10);
    let mut gen3 = Scripted {
        asked: Cell::new(0),
    };
    assert_eq!(run(d.path(), &its, &mut gen3), full);
    assert_eq!(gen3.asked.get(), 0);
}

#[test]
fn the_table_can_be_read_from_a_partial_cache_without_touching_it() {
    let d = tempfile::tempdir().unwrap();
    let its = items(6);
    let mut gen = Scripted {
        asked: Cell::new(0),
    };
    let full = run(d.path(), &its, &mut gen);
    let cache = d.path().join("llm_cache.jsonl");
    let text = std::fs::read_to_string(&cache).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Two whole answers and a line still being written by a running pass.
    let partial = format!("{}\n{}\n{}", lines[0], lines[1], &lines[2][..10]);
    std::fs::write(&cache, &partial).unwrap();
    let t = PromptTemplate::parse(PROMPT).unwrap();
    let p = profile::profiles_from_cache(&its, &t, &cache, &Silent).unwrap();
    assert_eq!(&p[..2], &full[..2]);
    assert!(p[2].pros.is_empty() && p[2].reason.as_deref().unwrap().contains("not answered yet"));
    // A reader leaves the writer's file as it found it.
    assert_eq!(std::fs::read_to_string(&cache).unwrap(), partial);
}

#[test]
fn an_item_without_text_is_not_sent_and_says_why() {
    let d = tempfile::tempdir().unwrap();
    let mut its = items(2);
    its.push(Item {
        id: "blank".into(),
        ..Item::default()
    });
    let mut gen = Scripted {
        asked: Cell::new(0),
    };
    let p = run(d.path(), &its, &mut gen);
    assert_eq!(gen.asked.get(), 2);
    assert!(p[2].pros.is_empty() && p[2].reason.as_deref().unwrap().contains("no item text"));
}

/// Six items (comedies 0, 2, 4; dramas 1, 3, 5) with distinct pros/cons, 2-d embeddings, and
/// ratings where users 0..8 like comedies and dislike dramas.
fn world() -> (ProfileTable, Vec<Rating>) {
    let profiles: Vec<ItemProfile> = (0..6u32)
        .map(|i| ItemProfile {
            item: i.to_string(),
            category: vec![if i.is_multiple_of(2) {
                "comedy"
            } else {
                "drama"
            }
            .into()],
            pros: vec![
                if i.is_multiple_of(2) {
                    "funny"
                } else {
                    "moving"
                }
                .into(),
                format!("p{i}"),
            ],
            cons: vec![if i.is_multiple_of(2) { "silly" } else { "slow" }.into()],
            ..ItemProfile::default()
        })
        .collect();
    let row = |i: usize| {
        if i.is_multiple_of(2) {
            [1.0, 0.0]
        } else {
            [0.0, 1.0]
        }
    };
    let emb: Vec<f32> = (0..6).flat_map(row).collect();
    let table = ProfileTable::new(profiles, emb.clone(), emb, 2).unwrap();
    let mut r = Vec::new();
    for u in 0..8 {
        for (t, i) in [0u32, 1, 2, 3, 4, 5].iter().enumerate() {
            r.push(Rating {
                user: format!("u{u}"),
                item: i.to_string(),
                rating: if i.is_multiple_of(2) { 5.0 } else { 1.0 },
                timestamp: (t + u) as f64,
            });
        }
    }
    (table, r)
}

fn fitted(seed: u64) -> Simulator {
    let (table, r) = world();
    let split = ratings::split(&r, 0.2, 0.0).unwrap();
    let mf = MfConfig {
        dim: 4,
        seed,
        max_epochs: 5,
        ..MfConfig::default()
    };
    Simulator::fit(table, &split, &Scale::default(), &mf, &Silent)
        .unwrap()
        .0
}

fn h(items: &[(&str, bool)]) -> Vec<(String, bool)> {
    items.iter().map(|(i, l)| (i.to_string(), *l)).collect()
}

#[test]
fn the_simulator_is_deterministic_under_a_seed() {
    let (a, b) = (fitted(7), fitted(7));
    let hist = h(&[("0", true), ("1", false)]);
    for item in ["2", "3", "4"] {
        assert_eq!(a.feedback("u1", &hist, item), b.feedback("u1", &hist, item));
    }
}

#[test]
fn every_edge_case_gets_an_answer_with_its_reason() {
    let sim = fitted(0);
    // Ordinary: all three vote; a comedy after liked comedies is liked by A and B.
    let f = sim.feedback("u1", &h(&[("0", true), ("1", false)]), "2");
    assert_eq!((f.a.vote, f.b.vote), (Some(true), Some(true)));
    assert_eq!(f.decided_by, "majority of 3");
    assert!(f.like);
    // No history, no liked, no disliked: the logical voters abstain; S decides alone.
    for (hist, why) in [
        (h(&[]), "no history"),
        (h(&[("1", false)]), "no liked"),
        (h(&[("0", true)]), "no disliked"),
    ] {
        let f = sim.feedback("u1", &hist, "2");
        assert_eq!((f.a.vote, f.b.vote), (None, None));
        assert!(f.a.reason.contains(why), "{}", f.a.reason);
        assert_eq!(f.decided_by, "S alone");
        assert_eq!(f.like, f.s.vote.unwrap());
    }
    // A user S never saw: folded in from the history, or the item prior without one.
    let f = sim.feedback("stranger", &h(&[("0", true), ("1", false)]), "2");
    assert!(f.s.reason.contains("folded in from 2"), "{}", f.s.reason);
    let f = sim.feedback("stranger", &h(&[]), "2");
    assert!(f.s.reason.contains("item prior"), "{}", f.s.reason);
    // An item outside the keyword table: no logical vote, S still answers.
    let f = sim.feedback("u1", &h(&[("0", true), ("1", false)]), "nope");
    assert!(f.a.reason.contains("not in the keyword table") && f.s.vote.is_some());
}

#[test]
fn an_episode_grows_only_its_own_users_history() {
    let sim = fitted(0);
    let (_, r) = world();
    // u1's logged ratings, and a different user u2 who rated the same items.
    let mine = h(&[("0", true), ("1", false)]);
    let cfg = EnvConfig {
        eval_steps: Some(3),
        ..EnvConfig::default()
    };
    let mut ep = Episode::reset(&sim, "u1", &mine, cfg, 1).unwrap();
    assert!(r.iter().any(|x| x.user == "u2" && x.item == "2"));
    for item in ["2", "3", "not-an-item"] {
        let s = ep.step(item);
        assert_eq!(s.done, ep.steps == 3);
    }
    // The history is u1's two logged items plus the two real recommendations, nothing of u2's.
    let items: Vec<&str> = ep.history.iter().map(|(i, _)| i.as_str()).collect();
    assert_eq!(items, ["0", "1", "2", "3"]);
    assert_eq!(&ep.history[..2], &mine[..]);
    assert!(ep.done);
    assert_eq!(ep.step("2").reason, "the episode is over");
}

#[test]
fn episodes_leave_with_the_geometric_probability() {
    let sim = fitted(0);
    let hist = h(&[("0", true), ("1", false)]);
    let cfg = EnvConfig::default();
    let mut total = 0usize;
    for seed in 0..200 {
        let mut ep = Episode::reset(&sim, "u1", &hist, cfg, seed).unwrap();
        while !ep.step("2").done {}
        total += ep.steps;
    }
    // Mean 1/0.025 = 40 steps; 200 episodes put the sample mean within ±9 with ~99.9%.
    let mean = total as f64 / 200.0;
    assert!((31.0..49.0).contains(&mean), "{mean}");
}

#[test]
fn the_judge_scores_a_recommendation_by_the_users_simulated_response() {
    let sim = Arc::new(fitted(0));
    let (_, r) = world();
    let labels = r.iter().map(|x| {
        (
            x.user.clone(),
            x.item.clone(),
            Scale::default().liked(x.rating),
        )
    });
    let judge = UserSimJudge::new(sim, labels, None, SimReward::Vote);
    let ex = Example {
        id: "x".into(),
        fields: serde_json::from_str(r#"{"user": "u1", "history_items": ["0", "1"]}"#).unwrap(),
    };
    let liked = judge.score(&ex, "2");
    assert_eq!(liked.value, 1.0, "{}", liked.reason);
    let zero = judge.score(&ex, "  ");
    assert_eq!(zero.value, 0.0);
    let no_user = Example {
        id: "y".into(),
        fields: Default::default(),
    };
    assert!(judge.validate(&no_user).is_err());
}

#[test]
fn a_rating_outside_the_scale_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("r.inter");
    std::fs::write(
        &p,
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t9\t1\n",
    )
    .unwrap();
    let e = format!(
        "{:#}",
        ratings::read_ratings(&p, &Scale::default()).unwrap_err()
    );
    assert!(e.contains("outside the scale") && e.contains("hint"), "{e}");
}

/// `world()` written as a user would have it: a `usersim build` directory and a RecBole
/// `.inter` file with ratings.
fn world_on_disk(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (table, r) = world();
    let profiles = dir.join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    profile::write_table(&profiles.join("keywords.jsonl"), &table.profiles).unwrap();
    let ids: Vec<String> = table.profiles.iter().map(|p| p.item.clone()).collect();
    for (name, data) in [
        ("pros.safetensors", &table.pros_emb),
        ("cons.safetensors", &table.cons_emb),
    ] {
        let e = llmrl::rec::embed::ItemEmbeddings {
            ids: ids.clone(),
            data: data.clone(),
            dim: table.dim,
            metadata: Default::default(),
        };
        llmrl::rec::embed::write_item_embeddings(&profiles.join(name), &e).unwrap();
    }
    let mut inter = String::from("user_id:token\titem_id:token\trating:float\ttimestamp:float\n");
    for x in &r {
        inter += &format!("{}\t{}\t{}\t{}\n", x.user, x.item, x.rating, x.timestamp);
    }
    let inter_path = dir.join("r.inter");
    std::fs::write(&inter_path, inter).unwrap();
    (profiles, inter_path)
}

/// `[verifier] name = "usersim"`: the recipe's judge fits the simulator from files and scores
/// a recommendation by the user's simulated response, as the in-memory judge does.
#[test]
fn the_simulator_is_a_recipe_verifier() {
    let d = tempfile::tempdir().unwrap();
    let (profiles, inter) = world_on_disk(d.path());
    let cfg: llmrl::reward::VerifierConfig = toml::from_str(&format!(
        "name = \"usersim\"\nprofiles = {:?}\ninter = {:?}\nreward = \"score\"\n\
         holdout_frac = 0.0\nvalid_frac = 0.2\ndim = 4\n",
        profiles.display().to_string(),
        inter.display().to_string()
    ))
    .unwrap();
    let judge = llmrl::reward::build(&cfg).unwrap();
    let ex = Example {
        id: "x".into(),
        fields: serde_json::from_str(r#"{"user": "u1", "history_items": ["0", "1"]}"#).unwrap(),
    };
    let (comedy, drama) = (judge.score(&ex, "2"), judge.score(&ex, "3"));
    assert!(
        comedy.correct && !drama.correct,
        "{} | {}",
        comedy.reason,
        drama.reason
    );
    assert!(
        comedy.value > drama.value,
        "{} vs {}",
        comedy.value,
        drama.value
    );
    assert!((0.0..=1.0).contains(&comedy.value));
    assert_eq!(judge.score(&ex, "no such item").value, 0.0);

    // A missing build directory is refused with the command that makes one.
    let llmrl::reward::VerifierConfig::Usersim(mut bad) = cfg else {
        unreachable!()
    };
    bad.profiles = d.path().join("nowhere");
    let e = format!("{:#}", bad.validate().unwrap_err());
    assert!(e.contains("usersim build"), "{e}");
}
