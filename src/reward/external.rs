//! External verifier: a user's program, started once and spoken to in JSON lines.
//!
//! ```toml
//! [verifier]
//! name = "external"
//! command = ["python3", "my_verifier.py"]
//! timeout_s = 10.0
//! ```
//! For each completion one line goes to the program's stdin,
//! `{"id": ..., "prompt": ..., "completion": ..., "ground_truth": ..., "fields": {...}}`, and one
//! line is read back from its stdout, `{"score": 0.7, "correct": true, "reason": "...",
//! "answer": "..."}` (only `score` is required; `correct` defaults to `score >= 1`). `prompt` is
//! the example's `_prompt` field, which the trainer sets to the rendered prompt, else its `prompt`
//! field, else null; `ground_truth` is the `ground_truth_field` (default `answer`) as JSON, or
//! null; `fields` are all of the example's fields. The program's stderr is passed through, so it
//! can log there; it must flush stdout after each reply.
//!
//! The program is spawned lazily on the first call. A timeout, a crash, a write failure or a
//! reply that is not the expected JSON scores 0 with the reason, and the program is killed and
//! started afresh for the next call, so one bad request cannot poison the rest. Calls are
//! serialized by a mutex: the protocol is one request, one reply. Like TRL's and verl's custom
//! reward functions (see `design/reference/peers.md`), but across a process boundary.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::ensure;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Score, Verifier};
use crate::data::Example;

/// `[verifier] name = "external"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalConfig {
    /// Program and arguments, e.g. `["python3", "my_verifier.py"]`.
    pub command: Vec<String>,
    /// Seconds to wait for each reply before the call scores 0 and the program is restarted.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
    /// Example field sent as `ground_truth`.
    #[serde(default = "default_ground_truth_field")]
    pub ground_truth_field: String,
    /// Directory the program runs in. A recipe resolves it against the recipe's own directory
    /// (default: that directory), so `command = ["python3", "v.py"]` finds `v.py` beside it.
    #[serde(default)]
    pub working_dir: Option<std::path::PathBuf>,
}

fn default_timeout_s() -> f64 {
    10.0
}

fn default_ground_truth_field() -> String {
    "answer".into()
}

pub struct ExternalVerifier {
    cfg: ExternalConfig,
    timeout: Duration,
    process: Mutex<Option<Process>>,
}

/// A running verifier program. Dropping it kills the program.
struct Process {
    child: Child,
    stdin: ChildStdin,
    /// Lines of the program's stdout, read by a thread so that waiting can time out.
    lines: Receiver<std::io::Result<String>>,
}

impl Drop for Process {
    fn drop(&mut self) {
        // Errors mean it already exited; either way nothing is left running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ExternalVerifier {
    pub fn new(cfg: &ExternalConfig) -> anyhow::Result<Self> {
        ensure!(
            !cfg.command.is_empty() && !cfg.command[0].is_empty(),
            "external verifier needs a command; hint: command = [\"python3\", \"my_verifier.py\"]"
        );
        ensure!(
            cfg.timeout_s.is_finite() && cfg.timeout_s > 0.0,
            "external verifier timeout_s = {} must be a positive number of seconds",
            cfg.timeout_s
        );
        Ok(ExternalVerifier {
            cfg: cfg.clone(),
            timeout: Duration::from_secs_f64(cfg.timeout_s),
            process: Mutex::new(None),
        })
    }

    fn spawn(&self) -> Result<Process, String> {
        let mut cmd = Command::new(&self.cfg.command[0]);
        if let Some(d) = &self.cfg.working_dir {
            cmd.current_dir(d);
        }
        let mut child = cmd
            .args(&self.cfg.command[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("could not start {:?}: {e}", self.cfg.command))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err("could not connect to the verifier's stdin/stdout".into());
        };
        let (tx, lines) = mpsc::channel();
        // Ends when the program's stdout closes (exit or kill) or the receiver is dropped.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Process {
            child,
            stdin,
            lines,
        })
    }

    /// Sends one request line and returns the reply line. On any failure the process is dropped
    /// (killed) so the next call starts a fresh one.
    fn call(&self, request: &str) -> Result<Value, String> {
        // A panic elsewhere while holding the lock leaves at worst a stale process; keep going.
        let mut slot = self.process.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(self.spawn()?);
        }
        let result = match slot.as_mut() {
            Some(p) => exchange(p, request, self.timeout, self.cfg.timeout_s),
            None => Err("verifier process missing".into()),
        };
        if result.is_err() {
            *slot = None;
        }
        result
    }
}

fn exchange(p: &mut Process, request: &str, timeout: Duration, secs: f64) -> Result<Value, String> {
    writeln!(p.stdin, "{request}")
        .and_then(|()| p.stdin.flush())
        .map_err(|e| format!("could not write to the verifier: {e}"))?;
    let line = match p.lines.recv_timeout(timeout) {
        Ok(Ok(line)) => line,
        Ok(Err(e)) => return Err(format!("could not read the verifier's reply: {e}")),
        Err(RecvTimeoutError::Timeout) => return Err(format!("no reply within {secs} s")),
        Err(RecvTimeoutError::Disconnected) => {
            let status = p.child.wait().map(|s| s.to_string()).unwrap_or_default();
            return Err(format!("the verifier exited ({status}) without replying"));
        }
    };
    serde_json::from_str(&line).map_err(|e| format!("reply {line:?} is not JSON: {e}"))
}

impl Verifier for ExternalVerifier {
    fn score(&self, example: &Example, completion: &str) -> Score {
        let field = |k: &str| example.fields.get(k).cloned();
        let request = json!({
            "id": example.id,
            "prompt": field("_prompt").or_else(|| field("prompt")).unwrap_or(Value::Null),
            "completion": completion,
            "ground_truth": field(&self.cfg.ground_truth_field).unwrap_or(Value::Null),
            "fields": example.fields,
        });
        let reply = match self.call(&request.to_string()) {
            Ok(r) => r,
            Err(e) => return Score::zero(format!("external verifier: {e}")),
        };
        let Some(value) = reply.get("score").and_then(Value::as_f64) else {
            // Protocol violation: restart so a confused program gets a clean slate.
            *self.process.lock().unwrap_or_else(|e| e.into_inner()) = None;
            return Score::zero(format!(
                "external verifier: reply {reply} has no numeric `score`"
            ));
        };
        let value = value as f32;
        if !value.is_finite() {
            return Score::zero(format!("external verifier: score {value} is not finite"));
        }
        let correct = reply
            .get("correct")
            .and_then(Value::as_bool)
            .unwrap_or(value >= 1.0);
        Score {
            value,
            correct,
            parts: vec![("external".into(), value)],
            reason: reply
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            answer: reply
                .get("answer")
                .and_then(Value::as_str)
                .map(str::to_string),
        }
    }

    fn name(&self) -> &str {
        "external"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = r#"
import json, os, sys, time
for line in sys.stdin:
    r = json.loads(line)
    c = r["completion"]
    if c == "hang":
        time.sleep(30)
    elif c == "crash":
        sys.exit(3)
    elif c == "garbage":
        print("not json", flush=True)
    elif c == "noscore":
        print(json.dumps({"reason": "forgot"}), flush=True)
    else:
        ok = c == r["ground_truth"]
        print(json.dumps({"score": 1.0 if ok else 0.25, "reason": "%s|%s|%d" % (
            r["prompt"], r["fields"]["answer"], os.getpid()), "answer": c}), flush=True)
"#;

    fn setup(timeout_s: f64) -> (tempfile::TempDir, ExternalVerifier) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.py");
        std::fs::write(&path, SCRIPT).unwrap();
        let cfg = ExternalConfig {
            command: vec!["python3".into(), path.to_string_lossy().into_owned()],
            working_dir: None,
            timeout_s,
            ground_truth_field: "answer".into(),
        };
        (dir, ExternalVerifier::new(&cfg).unwrap())
    }

    fn example() -> Example {
        let mut fields = serde_json::Map::new();
        fields.insert("answer".into(), "42".into());
        fields.insert("_prompt".into(), "What?".into());
        Example {
            id: "e1".into(),
            fields,
        }
    }

    fn pid(s: &Score) -> String {
        s.reason.rsplit('|').next().unwrap().to_string()
    }

    #[test]
    fn scores_and_restarts_after_each_kind_of_failure() {
        let (_dir, v) = setup(1.0);
        let ex = example();
        let good = v.score(&ex, "42");
        assert_eq!((good.value, good.correct), (1.0, true), "{}", good.reason);
        assert!(good.reason.starts_with("What?|42|"), "{}", good.reason);
        assert_eq!(good.answer.as_deref(), Some("42"));
        let wrong = v.score(&ex, "41");
        assert_eq!((wrong.value, wrong.correct), (0.25, false));
        // The same process served both calls.
        assert_eq!(pid(&good), pid(&wrong));

        let mut last_pid = pid(&wrong);
        for (bad, why) in [
            ("hang", "no reply within 1 s"),
            ("crash", "exited"),
            ("garbage", "not JSON"),
            ("noscore", "no numeric `score`"),
        ] {
            let s = v.score(&ex, bad);
            assert_eq!((s.value, s.correct), (0.0, false), "{bad}");
            assert!(s.reason.contains(why), "{bad}: {}", s.reason);
            let next = v.score(&ex, "42");
            assert_eq!(next.value, 1.0, "{bad}: recovers, {}", next.reason);
            assert_ne!(pid(&next), last_pid, "{bad}: restarted");
            last_pid = pid(&next);
        }
    }

    #[test]
    fn missing_program_scores_zero() {
        let cfg = ExternalConfig {
            command: vec!["/nonexistent/verifier".into()],
            working_dir: None,
            timeout_s: 1.0,
            ground_truth_field: "answer".into(),
        };
        let s = ExternalVerifier::new(&cfg).unwrap().score(&example(), "42");
        assert_eq!(s.value, 0.0);
        assert!(s.reason.contains("could not start"), "{}", s.reason);
    }

    #[test]
    fn config_is_checked() {
        let mut cfg = ExternalConfig {
            command: vec![],
            working_dir: None,
            timeout_s: 1.0,
            ground_truth_field: "answer".into(),
        };
        assert!(ExternalVerifier::new(&cfg).is_err());
        cfg.command = vec!["python3".into()];
        cfg.timeout_s = 0.0;
        assert!(ExternalVerifier::new(&cfg).is_err());
    }
}
