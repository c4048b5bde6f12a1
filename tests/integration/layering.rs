//! The layering rules of ARCHITECTURE.md, checked on the source text (the code before each
//! file's `#[cfg(test)]` module; test-only files named `tests.rs` are skipped):
//! - nothing below the CLI (`cli.rs` and `src/cli/`, which holds its reporter `console.rs`, and `main.rs`) imports `cli` or prints;
//! - no algorithm (`src/algo/`) touches files;
//! - no source file holds more than 600 lines before its tests.

use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;
const CLI_LAYER: [&str; 2] = ["cli.rs", "main.rs"];
const PRINTS: [&str; 5] = ["println!", "eprintln!", "print!", "eprint!", "dbg!"];
const CLI_PATHS: [&str; 3] = ["crate::cli", "llmrl::cli", "super::cli"];
const FILE_ACCESS: [&str; 5] = ["std::fs", "std::io", "File", "Path", "PathBuf"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The lines before the file's test module, with `//` comments cut off.
fn code_before_tests(text: &str) -> Vec<String> {
    text.lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .map(|l| match l.find("//") {
            Some(i) => l[..i].to_string(),
            None => l.to_string(),
        })
        .collect()
}

/// Whether `word` occurs in `line` as a whole identifier path (not inside a longer name).
fn has_word(line: &str, word: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    line.match_indices(word).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + word.len()..].chars().next();
        // `eprintln!` is not `println!`, `Profile` is not `File`, `PathBuf` is not `Path`.
        !before.is_some_and(ident) && (word.ends_with('!') || !after.is_some_and(ident))
    })
}

/// Every broken rule, one line each (`file:line: why`).
fn violations(root: &Path) -> Vec<String> {
    let src = root.join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let rel = f.strip_prefix(root).unwrap().display().to_string();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if name == "tests.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let code = code_before_tests(&text);
        if code.len() > MAX_LINES {
            out.push(format!(
                "{rel}: {} lines before its tests (at most {MAX_LINES})",
                code.len()
            ));
        }
        let top_level = f.parent() == Some(src.as_path());
        let cli_layer =
            (top_level && CLI_LAYER.contains(&name.as_str())) || f.starts_with(src.join("cli"));
        let algo = f.starts_with(src.join("algo"));
        for (i, line) in code.iter().enumerate() {
            if !cli_layer {
                for w in PRINTS.iter().filter(|w| has_word(line, w)) {
                    out.push(format!("{rel}:{}: prints ({w}) below the CLI", i + 1));
                }
                for w in CLI_PATHS.iter().filter(|w| line.contains(*w)) {
                    out.push(format!("{rel}:{}: imports the CLI ({w})", i + 1));
                }
            }
            if algo {
                for w in FILE_ACCESS.iter().filter(|w| has_word(line, w)) {
                    out.push(format!("{rel}:{}: an algorithm touches files ({w})", i + 1));
                }
            }
        }
    }
    out
}

#[test]
fn layering_rules_hold() {
    let v = violations(Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(v.is_empty(), "layering broken:\n{}", v.join("\n"));
}

#[test]
fn the_check_sees_what_it_forbids() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("algo")).unwrap();
    std::fs::write(src.join("cli.rs"), "fn f() { println!(\"ok\"); }\n").unwrap();
    std::fs::write(
        src.join("train.rs"),
        "use crate::cli::parse;\n// println! in a comment is fine\nfn f() { eprintln!(\"x\"); }\n\
         #[cfg(test)]\nmod tests { fn g() { println!(\"fine in tests\"); } }\n",
    )
    .unwrap();
    std::fs::write(
        src.join("algo/x.rs"),
        "use std::path::Path;\nfn f(p: &Path) { let _ = std::fs::read(p); }\nstruct Profile;\n",
    )
    .unwrap();
    std::fs::write(src.join("long.rs"), "fn f() {}\n".repeat(601)).unwrap();
    let v = violations(d.path());
    let has = |s: &str| v.iter().any(|l| l.contains(s));
    assert!(has("src/train.rs:1: imports the CLI"), "{v:#?}");
    assert!(has("src/train.rs:3: prints (eprintln!)"), "{v:#?}");
    assert!(!has("src/train.rs:2") && !has("src/cli.rs"), "{v:#?}");
    assert!(
        has("src/algo/x.rs:1: an algorithm touches files (Path)"),
        "{v:#?}"
    );
    assert!(
        has("src/algo/x.rs:2: an algorithm touches files (std::fs)"),
        "{v:#?}"
    );
    assert!(!has("src/algo/x.rs:3"), "Profile is not File: {v:#?}");
    assert!(has("src/long.rs: 601 lines"), "{v:#?}");
    assert_eq!(v.len(), 6, "{v:#?}");
}
