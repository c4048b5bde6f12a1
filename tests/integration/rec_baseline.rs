//! `llmrl rec baseline` through the real binary on a generated log (no shipped data).

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_llmrl"))
}

/// 30 users walking 12 items in steps of +1 from different starts, 6 interactions each.
fn successor_inter(dir: &std::path::Path) -> std::path::PathBuf {
    let mut text = String::from("user_id:token\titem_id:token\trating:float\ttimestamp:float\n");
    for u in 0..30 {
        for t in 0..6 {
            text.push_str(&format!("u{u}\ti{}\t5\t{}\n", (u * 5 + t) % 12, 1000 + t));
        }
    }
    let p = dir.join("walk.inter");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn rec_baseline_writes_metrics_for_both_rankers() {
    let dir = tempfile::tempdir().unwrap();
    let inter = successor_inter(dir.path());
    let out = dir.path().join("out");
    let res = bin()
        .args(["rec", "baseline", "--inter"])
        .arg(&inter)
        .args([
            "--model",
            "popularity",
            "--model",
            "sasrec",
            "--history",
            "4",
        ])
        .args([
            "--hidden",
            "16",
            "--max-epochs",
            "3",
            "--bootstrap",
            "100",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(m["test_users"], 30);
    assert_eq!(m["history_rule"], "allow");
    for model in ["popularity", "sasrec"] {
        let at = m["models"][model]["test"]["at"].as_array().unwrap();
        assert_eq!(
            at.iter()
                .map(|a| a["k"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            [1, 3, 5, 10, 20]
        );
        let rows = std::fs::read_to_string(out.join(format!("{model}.rows.jsonl"))).unwrap();
        assert_eq!(rows.lines().count(), 30);
    }
    assert!(m["differences_95ci"]["sasrec - popularity"]["NDCG@10"]["lo"].is_number());
    assert!(out.join("sasrec.safetensors").is_file());
}

#[test]
fn rec_baseline_names_the_row_of_an_unknown_item() {
    let dir = tempfile::tempdir().unwrap();
    let inter = successor_inter(dir.path());
    let index = dir.path().join("index.json");
    // i7 is missing from the SID index.
    let ids: serde_json::Map<String, serde_json::Value> = (0..12)
        .filter(|&i| i != 7)
        .map(|i| (format!("i{i}"), serde_json::json!(["<a_0>"])))
        .collect();
    std::fs::write(&index, serde_json::Value::Object(ids).to_string()).unwrap();
    let res = bin()
        .args(["rec", "baseline", "--inter"])
        .arg(&inter)
        .arg("--items")
        .arg(&index)
        .arg("--out")
        .arg(dir.path().join("o"))
        .output()
        .unwrap();
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    // u0 walks i0..i5, u1 i5..i10: its i7 is line 1 (header) + 6 (u0) + 3 = 10.
    assert!(
        err.contains("walk.inter row 10") && err.contains("`i7`"),
        "{err}"
    );
    assert!(!dir.path().join("o").join("metrics.json").exists());
}
