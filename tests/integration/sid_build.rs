//! `llmrl sid build` through the real binary on generated vectors (no shipped data).

use std::path::Path;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_llmrl"))
}

/// 64 items on a 4 × 4 × 4 grid in 3-d (JSONL, ids `m0`..`m63`).
fn grid_jsonl(dir: &Path) -> std::path::PathBuf {
    let mut text = String::new();
    for i in 0..64 {
        let (x, y, z) = (i % 4, (i / 4) % 4, i / 16);
        text.push_str(&format!(
            "{{\"item_id\": \"m{i}\", \"embedding\": [{}, {}, {}]}}\n",
            x as f32 * 1.0,
            y as f32 * 0.3,
            z as f32 * 0.05
        ));
    }
    let p = dir.join("grid.jsonl");
    std::fs::write(&p, text).unwrap();
    p
}

fn build(emb: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    bin()
        .args(["sid", "build", "--embeddings"])
        .arg(emb)
        .args(["--levels", "2", "--codebook", "4", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn sid_build_writes_index_report_tokens_and_keeps_user_files() {
    let dir = tempfile::tempdir().unwrap();
    let emb = grid_jsonl(dir.path());
    let out = dir.path().join("sid");
    let res = build(&emb, &out, &["--collisions", "ordinal"]);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{err}");
    assert!(
        err.contains("collisions:"),
        "the summary goes through the reporter: {err}"
    );
    // 64 items into 4 × 4 codes: every SID is shared, the ordinal level tells them apart and is
    // as large as the largest group.
    let table = llmrl::rec::sid::SidTable::read_index(&out.join("index.json")).unwrap();
    assert_eq!(table.len(), 64);
    assert!(table.is_bijection());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let largest = report["before"]["largest_group"].as_u64().unwrap() as usize;
    assert_eq!(table.sizes(), &[4, 4, largest]);
    assert_eq!(report["before"]["rate"], 1.0);
    assert_eq!(report["after"]["rate"], 0.0);
    assert_eq!(report["levels"][0]["used"], 4);
    let tokens: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(out.join("tokens.json")).unwrap()).unwrap();
    assert_eq!(tokens.len(), 8 + largest);
    assert_eq!(tokens[4], "<b_0>");

    // A non-empty --out is refused without --force, and a user's file survives --force.
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let res = build(&emb, &out, &[]);
    assert!(!res.status.success());
    assert!(String::from_utf8_lossy(&res.stderr).contains("--force"));
    let res = build(&emb, &out, &["--force", "--collisions", "keep"]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "mine"
    );
    let table = llmrl::rec::sid::SidTable::read_index(&out.join("index.json")).unwrap();
    assert_eq!(table.levels(), 2);
}

#[test]
fn sid_build_bad_input_fails_before_work() {
    let dir = tempfile::tempdir().unwrap();
    let emb = dir.path().join("e.jsonl");
    std::fs::write(&emb, "{\"item_id\": \"a\", \"embedding\": [1, 2]}\n{\"item_id\": \"a\", \"embedding\": [3, 4]}\n").unwrap();
    let res = build(&emb, &dir.path().join("o"), &[]);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        !res.status.success() && err.contains("`a` appears twice"),
        "{err}"
    );
    assert!(!dir.path().join("o").exists());
    // Reassign cannot fit 16 items of a first-level code into 4 last-level codes: a clear
    // error naming the fix.
    let emb = grid_jsonl(dir.path());
    let res = build(&emb, &dir.path().join("r"), &["--collisions", "reassign"]);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        !res.status.success() && err.contains("--collisions ordinal"),
        "{err}"
    );
}
