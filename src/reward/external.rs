//! External verifier: a user's program, started when the verifier is built and spoken to in
//! JSON lines.
//!
//! ```toml
//! [verifier]
//! name = "external"
//! command = ["python3", "my_verifier.py"]
//! timeout_s = 10.0
//! workers = 2            # processes running side by side
//! startup_check_s = 0.5  # each must still be running this long after its start
//! ```
//! For each completion one line goes to the program's stdin,
//! `{"id": ..., "prompt": ..., "completion": ..., "ground_truth": ..., "fields": {...}}`, and one
//! line is read back from its stdout, `{"score": 0.7, "correct": true, "reason": "...",
//! "answer": "..."}` (only `score` is required; `correct` defaults to `score >= 1`). `prompt` is
//! the example's `_prompt` field, which the trainer sets to the rendered prompt, else its `prompt`
//! field, else null; `ground_truth` is the `ground_truth_field` (default `answer`) as JSON, or
//! null; `fields` are all of the example's fields. The program's stderr is passed through (so it
//! can log there) and its last lines are kept for error messages; it must flush stdout after
//! each reply.
//!
//! [`ExternalVerifier::new`] starts the `workers` processes at once, so a recipe that names a
//! missing program, script or working directory fails when it is resolved, before any weights
//! load, with the program's own stderr in the message. A program counts as started when it is
//! still running `startup_check_s` after it was spawned (it has nothing to say before the first
//! request, so there is no handshake to wait for); one that dies later is seen at its first call.
//!
//! Requests go to whichever worker is free; a batch ([`Verifier::score_batch`]) keeps all of
//! them busy. A timeout, a crash, a write failure or a reply that is not the expected JSON scores
//! 0 with the reason, and that worker's program is killed and started afresh, so one bad request
//! cannot poison the rest and the run goes on. Like TRL's and verl's custom reward functions
//! (see `design/reference/peers.md`), but across a process boundary.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
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
    /// Copies of the program serving requests side by side (each sees one request at a time).
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Seconds each program must keep running after its start for the verifier to count as
    /// started; a program that exits sooner (a typo in the script name) is an error then.
    #[serde(default = "default_startup_check_s")]
    pub startup_check_s: f64,
}

fn default_timeout_s() -> f64 {
    10.0
}

fn default_ground_truth_field() -> String {
    "answer".into()
}

fn default_workers() -> usize {
    2
}

fn default_startup_check_s() -> f64 {
    0.5
}

/// Lines of a program's stderr kept for messages.
const STDERR_TAIL_LINES: usize = 20;

pub struct ExternalVerifier {
    cfg: ExternalConfig,
    timeout: Duration,
    /// One slot per worker; `None` after a failed restart (the next call tries again).
    workers: Vec<Mutex<Option<Process>>>,
    /// Indices of workers not serving a request, and the signal that one became free.
    free: Mutex<Vec<usize>>,
    freed: Condvar,
}

/// A running verifier program. Dropping it kills the program.
struct Process {
    child: Child,
    stdin: ChildStdin,
    /// Lines of the program's stdout, read by a thread so that waiting can time out.
    lines: Receiver<std::io::Result<String>>,
    /// The last lines of its stderr, and the thread that forwards them (done at EOF).
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    stderr_thread: JoinHandle<()>,
}

impl Drop for Process {
    fn drop(&mut self) {
        // Errors mean it already exited; either way nothing is left running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// The kept stderr lines, after giving the forwarding thread a moment to reach EOF when
    /// the program has exited (so a crash message is complete).
    fn stderr_text(&self) -> String {
        let until = Instant::now() + Duration::from_secs(1);
        while !self.stderr_thread.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        let tail = self.stderr_tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn stderr_suffix(&self) -> String {
        let text = self.stderr_text();
        if text.is_empty() {
            " (no stderr)".into()
        } else {
            format!("; its stderr:\n{text}")
        }
    }
}

impl ExternalVerifier {
    /// Checks the config and starts the workers; fails if a program cannot be started or exits
    /// during the startup check, with its stderr in the message.
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
        ensure!(
            cfg.startup_check_s.is_finite() && cfg.startup_check_s >= 0.0,
            "external verifier startup_check_s = {} must be a number of seconds ≥ 0",
            cfg.startup_check_s
        );
        ensure!(
            (1..=256).contains(&cfg.workers),
            "external verifier workers = {} must be between 1 and 256",
            cfg.workers
        );
        if let Some(d) = &cfg.working_dir {
            ensure!(
                d.is_dir(),
                "external verifier working_dir {} is not a directory; hint: it is relative to \
                 the recipe's directory",
                d.display()
            );
        }
        let mut procs = Vec::with_capacity(cfg.workers);
        for _ in 0..cfg.workers {
            procs.push(spawn(cfg).map_err(anyhow::Error::msg)?);
        }
        // All started together, so the check costs one `startup_check_s` however many there are.
        let deadline = Instant::now() + Duration::from_secs_f64(cfg.startup_check_s);
        for p in &mut procs {
            loop {
                match p.child.try_wait() {
                    Ok(Some(status)) => bail!(
                        "external verifier {} exited at start ({status}){}; hint: check the \
                         command and working_dir",
                        describe(cfg),
                        p.stderr_suffix()
                    ),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Ok(None) => break,
                    Err(e) => bail!("external verifier {}: {e}", describe(cfg)),
                }
            }
        }
        Ok(ExternalVerifier {
            cfg: cfg.clone(),
            timeout: Duration::from_secs_f64(cfg.timeout_s),
            workers: procs.into_iter().map(|p| Mutex::new(Some(p))).collect(),
            free: Mutex::new((0..cfg.workers).rev().collect()),
            freed: Condvar::new(),
        })
    }

    /// Waits for a free worker and holds it until the guard drops.
    fn acquire(&self) -> WorkerGuard<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(i) = free.pop() {
                return WorkerGuard {
                    owner: self,
                    index: i,
                };
            }
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Sends one request line and returns the reply, which has a numeric `score`. On any
    /// failure that worker's program is killed and a fresh one started for the next call.
    fn call(&self, request: &str) -> Result<Value, String> {
        let guard = self.acquire();
        // A panic elsewhere while holding the lock leaves at worst a stale process; keep going.
        let mut slot = self.workers[guard.index]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(spawn(&self.cfg)?);
        }
        let result = match slot.as_mut() {
            Some(p) => exchange(p, request, self.timeout, self.cfg.timeout_s),
            None => Err("verifier process missing".into()),
        };
        if result.is_err() {
            // Kill now, restart now: the next request finds a clean, running program. A failed
            // restart leaves the slot empty and the next call tries again.
            *slot = None;
            *slot = spawn(&self.cfg).ok();
        }
        result
    }

    fn request(&self, example: &Example, completion: &str) -> String {
        let field = |k: &str| example.fields.get(k).cloned();
        json!({
            "id": example.id,
            "prompt": field("_prompt").or_else(|| field("prompt")).unwrap_or(Value::Null),
            "completion": completion,
            "ground_truth": field(&self.cfg.ground_truth_field).unwrap_or(Value::Null),
            "fields": example.fields,
        })
        .to_string()
    }
}

struct WorkerGuard<'a> {
    owner: &'a ExternalVerifier,
    index: usize,
}

impl Drop for WorkerGuard<'_> {
    fn drop(&mut self) {
        let mut free: MutexGuard<'_, Vec<usize>> =
            self.owner.free.lock().unwrap_or_else(|e| e.into_inner());
        free.push(self.index);
        self.owner.freed.notify_one();
    }
}

/// `["python3", "v.py"]` in DIR, for messages.
fn describe(cfg: &ExternalConfig) -> String {
    match &cfg.working_dir {
        Some(d) => format!("{:?} (in {})", cfg.command, d.display()),
        None => format!("{:?}", cfg.command),
    }
}

fn spawn(cfg: &ExternalConfig) -> Result<Process, String> {
    let mut cmd = Command::new(&cfg.command[0]);
    if let Some(d) = &cfg.working_dir {
        cmd.current_dir(d);
    }
    let mut child = cmd
        .args(&cfg.command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "could not start external verifier {}: {e}; hint: check the command (is the \
                 program installed and on PATH?) and working_dir",
                describe(cfg)
            )
        })?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        return Err("could not connect to the verifier's stdin/stdout/stderr".into());
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
    let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
    let tail = Arc::clone(&stderr_tail);
    // Passes the program's log through unchanged and keeps its last lines; ends at EOF.
    let stderr_thread = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(std::io::stderr().lock(), "{line}");
            let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
            if t.len() == STDERR_TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line);
        }
    });
    Ok(Process {
        child,
        stdin,
        lines,
        stderr_tail,
        stderr_thread,
    })
}

fn exchange(p: &mut Process, request: &str, timeout: Duration, secs: f64) -> Result<Value, String> {
    if let Err(e) = writeln!(p.stdin, "{request}").and_then(|()| p.stdin.flush()) {
        return Err(format!(
            "could not write to the verifier: {e}{}",
            p.stderr_suffix()
        ));
    }
    let line = match p.lines.recv_timeout(timeout) {
        Ok(Ok(line)) => line,
        Ok(Err(e)) => return Err(format!("could not read the verifier's reply: {e}")),
        Err(RecvTimeoutError::Timeout) => {
            return Err(format!(
                "no reply within {secs} s (the worker was killed and restarted)"
            ))
        }
        Err(RecvTimeoutError::Disconnected) => {
            let status = p.child.wait().map(|s| s.to_string()).unwrap_or_default();
            return Err(format!(
                "the verifier exited ({status}) without replying{}",
                p.stderr_suffix()
            ));
        }
    };
    let reply: Value =
        serde_json::from_str(&line).map_err(|e| format!("reply {line:?} is not JSON: {e}"))?;
    // Protocol violation: restart so a confused program gets a clean slate.
    if reply.get("score").and_then(Value::as_f64).is_none() {
        return Err(format!("reply {reply} has no numeric `score`"));
    }
    Ok(reply)
}

/// The score of one reply (which has a numeric `score`).
fn score_of(reply: &Value) -> Score {
    let value = reply.get("score").and_then(Value::as_f64).unwrap_or(0.0) as f32;
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

impl Verifier for ExternalVerifier {
    fn score(&self, example: &Example, completion: &str) -> Score {
        match self.call(&self.request(example, completion)) {
            Ok(reply) => score_of(&reply),
            Err(e) => Score::zero(format!("external verifier: {e}")),
        }
    }

    /// One thread per worker, each taking the next row until none is left: every program stays
    /// busy, and results come back in row order.
    fn score_batch(&self, rows: &[(&Example, &str)]) -> Vec<Score> {
        let next = AtomicUsize::new(0);
        let slots: Vec<Mutex<Option<Score>>> = rows.iter().map(|_| Mutex::new(None)).collect();
        std::thread::scope(|s| {
            for _ in 0..self.workers.len().min(rows.len()) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((ex, c)) = rows.get(i) else { break };
                    let score = self.score(ex, c);
                    *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(score);
                });
            }
        });
        slots
            .into_iter()
            .map(|m| {
                m.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .unwrap_or_else(|| Score::zero("external verifier: row not scored"))
            })
            .collect()
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
        print("about to crash", file=sys.stderr, flush=True)
        sys.exit(3)
    elif c == "garbage":
        print("not json", flush=True)
    elif c == "noscore":
        print(json.dumps({"reason": "forgot"}), flush=True)
    elif c.startswith("meet:"):
        # Rendezvous of two requests through files: each only replies once the other arrived,
        # so two of them can only both succeed if they are served at the same time.
        me, other = c[5:].split(",")
        open(os.path.join(r["fields"]["dir"], me), "w").close()
        while not os.path.exists(os.path.join(r["fields"]["dir"], other)):
            time.sleep(0.01)
        print(json.dumps({"score": 1.0, "reason": "met|%d" % os.getpid()}), flush=True)
    else:
        ok = c == r["ground_truth"]
        print(json.dumps({"score": 1.0 if ok else 0.25, "reason": "%s|%s|%d" % (
            r["prompt"], r["fields"]["answer"], os.getpid()), "answer": c}), flush=True)
"#;

    fn config(command: Vec<String>, timeout_s: f64, workers: usize) -> ExternalConfig {
        ExternalConfig {
            command,
            working_dir: None,
            timeout_s,
            ground_truth_field: "answer".into(),
            workers,
            // Success never depends on this; failures are seen as soon as the program exits.
            startup_check_s: 0.05,
        }
    }

    fn setup(timeout_s: f64, workers: usize) -> (tempfile::TempDir, ExternalVerifier) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.py");
        std::fs::write(&path, SCRIPT).unwrap();
        let cmd = vec!["python3".into(), path.to_string_lossy().into_owned()];
        (
            dir,
            ExternalVerifier::new(&config(cmd, timeout_s, workers)).unwrap(),
        )
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
        // One worker, so every call goes to the same program until it is restarted. The timeout
        // leaves a fresh python ample time to start on a loaded machine.
        let (_dir, v) = setup(10.0, 1);
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
            ("hang", "no reply within 10 s"),
            ("crash", "about to crash"),
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
    fn a_hanging_call_in_a_batch_scores_zero_and_the_rest_go_on() {
        let (_dir, v) = setup(10.0, 2);
        let ex = example();
        let rows = [(&ex, "42"), (&ex, "hang"), (&ex, "41"), (&ex, "42")];
        let s = v.score_batch(&rows);
        let values: Vec<f32> = s.iter().map(|s| s.value).collect();
        assert_eq!(values, [1.0, 0.0, 0.25, 1.0]);
        assert!(
            s[1].reason.contains("no reply within 10 s"),
            "{}",
            s[1].reason
        );
        assert!(s[1].reason.contains("restarted"), "{}", s[1].reason);
    }

    #[test]
    fn workers_serve_requests_side_by_side() {
        // Each request waits for the other: served one at a time, the first would time out.
        let (dir, v) = setup(20.0, 2);
        let mut ex = example();
        ex.fields
            .insert("dir".into(), dir.path().to_string_lossy().into());
        let s = v.score_batch(&[(&ex, "meet:a,b"), (&ex, "meet:b,a")]);
        assert!(s.iter().all(|s| s.value == 1.0), "{s:?}");
        assert_ne!(pid(&s[0]), pid(&s[1]), "two programs");
    }

    #[test]
    fn missing_program_fails_at_build() {
        let cfg = config(vec!["/nonexistent/verifier".into()], 1.0, 2);
        let err = format!("{:#}", ExternalVerifier::new(&cfg).err().unwrap());
        assert!(err.contains("could not start"), "{err}");
        assert!(err.contains("/nonexistent/verifier"), "{err}");
    }

    #[test]
    fn a_program_that_exits_at_start_fails_at_build_with_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        // A script name with a typo: python starts, complains on stderr and exits.
        let mut cfg = config(vec!["python3".into(), "no_such_verifier.py".into()], 1.0, 2);
        cfg.working_dir = Some(dir.path().to_path_buf());
        // Long enough that python has surely exited; the check returns as soon as it does.
        cfg.startup_check_s = 60.0;
        let err = format!("{:#}", ExternalVerifier::new(&cfg).err().unwrap());
        assert!(err.contains("exited at start"), "{err}");
        assert!(err.contains("no_such_verifier.py"), "{err}");
        assert!(err.contains("No such file"), "python's own stderr: {err}");
    }

    #[test]
    fn a_missing_working_dir_fails_at_build() {
        let mut cfg = config(vec!["cat".into()], 1.0, 1);
        cfg.working_dir = Some("/nonexistent/dir".into());
        let err = format!("{:#}", ExternalVerifier::new(&cfg).err().unwrap());
        assert!(err.contains("/nonexistent/dir"), "{err}");
        assert!(err.contains("not a directory"), "{err}");
    }

    #[test]
    fn config_is_checked() {
        let mut cfg = config(vec![], 1.0, 1);
        assert!(ExternalVerifier::new(&cfg).is_err());
        cfg.command = vec!["cat".into()];
        cfg.timeout_s = 0.0;
        assert!(ExternalVerifier::new(&cfg).is_err());
        cfg.timeout_s = 1.0;
        cfg.workers = 0;
        assert!(ExternalVerifier::new(&cfg).is_err());
        cfg.workers = 1;
        assert!(ExternalVerifier::new(&cfg).is_ok());
    }
}
