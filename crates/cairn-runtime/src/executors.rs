//! The built-in executors: tasks that need no worker. A state's `task.exec` runs a command
//! on the node; `task.http` makes an HTTP request. Both are ordinary tasks on reserved
//! queues (`cairn.exec`, `cairn.http`), so they share leases, attempts, retries and
//! reclaims with every other task; [`ExecutorService`] claims and runs them.
//!
//! Policy is the engine's ([`cairn_engine::Executors`]: the allowlist, checked when a
//! machine is applied and again here when a command runs, and the secrets that
//! `{{secret.NAME}}` placeholders name). Definitions never hold a secret: the stored task
//! input keeps the placeholder, the executor fills it in when it runs, and a secret's value
//! is masked again in what comes back (stdout, stderr, the response body).
//!
//! Outcomes: `exec` completes with `{exit_code, stdout, stderr, stdout_truncated,
//! stderr_truncated, duration_ms}` (plus `json` when stdout is JSON) on exit status 0;
//! any other status, a signal or the timeout fails the attempt as retryable with the same
//! fields in `task.failed`'s payload. `http` completes with `{status, headers, body}` on
//! 2xx; 408, 425, 429, 5xx and transport errors fail as retryable, other statuses as not.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_core::machine::{EXEC_QUEUE, HTTP_QUEUE};
use cairn_engine::{Claimed, DEFAULT_LEASE, Engine, Error, Executors, Usage};
use cairn_store::Store;
use serde_json::{Value, json};

use crate::service::{Service, Shutdown};

/// Bytes read from a stream, up to a limit.
#[derive(Clone, Debug, Default)]
pub struct Captured {
    /// The bytes kept.
    pub bytes: Vec<u8>,
    /// More was written than was kept.
    pub truncated: bool,
}

/// How a process run ended.
#[derive(Debug)]
pub struct Finished {
    /// `None` when the process was killed for the timeout or because `beat` said stop.
    pub status: Option<ExitStatus>,
    /// What the process wrote to stdout (the first bytes).
    pub stdout: Captured,
    /// What the process wrote to stderr (the last bytes).
    pub stderr: Captured,
    /// The process was killed at its timeout.
    pub timed_out: bool,
    /// Why `beat` stopped the run.
    pub abandoned: Option<String>,
    /// How long it ran.
    pub duration: Duration,
}

/// Runs `cmd` in its own process group with `stdin` on its standard input, keeping the
/// first `max_stdout` bytes of stdout and the last `max_stderr` of stderr. Every `every`
/// it calls `beat`; an `Err` from `beat`, or the `timeout`, kills the whole group.
/// Errors only when the command cannot start.
pub fn run_process(
    mut cmd: Command,
    stdin: Vec<u8>,
    max_stdout: usize,
    max_stderr: usize,
    timeout: Option<Duration>,
    every: Duration,
    beat: &mut dyn FnMut() -> Result<(), String>,
) -> std::io::Result<Finished> {
    use std::os::unix::process::CommandExt;
    let started = Instant::now();
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut input = child.stdin.take().expect("piped");
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut c = Captured::default();
        let _ = (&mut stdout)
            .take(max_stdout as u64)
            .read_to_end(&mut c.bytes);
        let rest = std::io::copy(&mut stdout, &mut std::io::sink()).unwrap_or(0);
        c.truncated = rest > 0;
        c
    });
    let err_reader = std::thread::spawn(move || {
        let mut c = Captured::default();
        let mut buf = [0u8; 8192];
        loop {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    c.bytes.extend_from_slice(&buf[..n]);
                    if c.bytes.len() > max_stderr.saturating_mul(2).max(8192) {
                        let cut = c.bytes.len() - max_stderr;
                        c.bytes.drain(..cut);
                        c.truncated = true;
                    }
                }
            }
        }
        if c.bytes.len() > max_stderr {
            let cut = c.bytes.len() - max_stderr;
            c.bytes.drain(..cut);
            c.truncated = true;
        }
        c
    });
    let pid = rustix::process::Pid::from_child(&child);
    let kill = |child: &mut std::process::Child| {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        let _ = child.kill();
        let _ = child.wait();
    };
    let mut last_beat = Instant::now();
    let (mut timed_out, mut abandoned) = (false, None);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => {
                kill(&mut child);
                abandoned = Some(format!("waiting for the command failed: {e}"));
                break None;
            }
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            kill(&mut child);
            timed_out = true;
            break None;
        }
        if last_beat.elapsed() >= every {
            if let Err(why) = beat() {
                kill(&mut child);
                abandoned = Some(why);
                break None;
            }
            last_beat = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Whatever the command left behind in its group goes too, so the pipes close.
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    let _ = feeder.join();
    Ok(Finished {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
        timed_out,
        abandoned,
        duration: started.elapsed(),
    })
}

/// What a built-in executor made of one attempt.
#[derive(Debug, PartialEq)]
enum Outcome {
    Done(Value),
    Failed {
        error: String,
        retryable: bool,
        details: Value,
    },
    /// The attempt became stale while it ran: nothing to report.
    Abandoned,
}

fn failed(error: impl Into<String>, retryable: bool, details: Value) -> Outcome {
    Outcome::Failed {
        error: error.into(),
        retryable,
        details,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The end of `s`, at most `max` bytes, on a character boundary.
fn tail(s: &str, max: usize) -> &str {
    let s = s.trim();
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Runs one `exec` task.
fn run_exec<S: Store>(
    engine: &Engine<S>,
    cfg: &Executors,
    task: &Claimed,
    stop: &Shutdown,
) -> Outcome {
    let req = &task.input;
    let Some(command) = str_field(req, "command") else {
        return failed("the task input names no command", false, Value::Null);
    };
    if !cfg.allows(command) {
        return failed(
            format!(
                "`{command}` is not on the server's exec allowlist (setting `executors.exec.allow`)"
            ),
            false,
            Value::Null,
        );
    }
    let mut used = Vec::new();
    let mut cmd = Command::new(command);
    cmd.env_clear();
    for name in &cfg.exec_inherit_env {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    cmd.env("CAIRN_TASK_ID", &task.id)
        .env("CAIRN_TASK_ATTEMPT", task.attempt.to_string())
        .env("CAIRN_TASK_ACTION", &task.action)
        .env("CAIRN_TASK_STATE", &task.state)
        .env("CAIRN_INSTANCE", &task.instance)
        .env("CAIRN_NAMESPACE", &task.namespace);
    if let Some(Value::Array(args)) = req.get("args") {
        cmd.args(args.iter().map(|a| a.as_str().unwrap_or_default()));
    }
    if let Some(Value::Object(env)) = req.get("env") {
        for (k, v) in env {
            match cfg.fill(v.as_str().unwrap_or_default(), &mut used) {
                Ok(v) => {
                    cmd.env(k, v);
                }
                Err(e) => return failed(e, false, Value::Null),
            }
        }
    }
    if let Some(cwd) = str_field(req, "cwd") {
        cmd.current_dir(cwd);
    }
    let keep = req
        .get("max_output")
        .and_then(Value::as_u64)
        .map_or(cfg.exec_output, |n| n as usize)
        .min(cfg.exec_max_output);
    let stdin = match req.get("stdin") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(v) => v.to_string().into_bytes(),
    };
    let timeout = task
        .timeout_ms
        .map_or(cfg.exec_timeout, Duration::from_millis);
    // Checked often (the server may be stopping), the task read every half second (it may
    // have been cancelled), the lease renewed at a third of it.
    let (mut last_beat, mut last_look) = (Instant::now(), Instant::now());
    let mut beat = || {
        if stop.is_triggered() {
            return Err("the server is stopping".to_string());
        }
        if last_look.elapsed() >= Duration::from_millis(500) {
            last_look = Instant::now();
            if let Ok(t) = engine.store().task(&task.id)
                && t.as_ref().is_none_or(|t| {
                    t.status != cairn_store::TaskStatus::Leased || t.attempt != task.attempt
                })
            {
                return Err("the task was cancelled or reclaimed".to_string());
            }
        }
        if last_beat.elapsed() < DEFAULT_LEASE / 3 {
            return Ok(());
        }
        last_beat = Instant::now();
        match engine.heartbeat(&task.id, task.attempt, DEFAULT_LEASE) {
            Err(e @ (Error::Conflict(_) | Error::NotFound(_))) => Err(e.to_string()),
            _ => Ok(()),
        }
    };
    let every = Duration::from_millis(100);
    let run = match run_process(cmd, stdin, keep, keep, Some(timeout), every, &mut beat) {
        Ok(r) => r,
        Err(e) => {
            return failed(format!("cannot run `{command}`: {e}"), false, Value::Null);
        }
    };
    let stdout = cfg.mask(&text(&run.stdout.bytes), &used);
    let stderr = cfg.mask(&text(&run.stderr.bytes), &used);
    let mut fields = json!({
        "exit_code": run.status.and_then(|s| s.code()),
        "stdout": stdout, "stderr": stderr,
        "stdout_truncated": run.stdout.truncated, "stderr_truncated": run.stderr.truncated,
        "duration_ms": run.duration.as_millis() as u64,
    });
    if let Some(why) = run.abandoned {
        if stop.is_triggered() {
            return failed(format!("stopped: {why}"), true, fields);
        }
        return Outcome::Abandoned;
    }
    if run.timed_out {
        fields["timed_out"] = json!(true);
        return failed(
            format!(
                "`{command}` timed out after {} ms and was killed",
                timeout.as_millis()
            ),
            true,
            fields,
        );
    }
    let status = run.status.expect("a finished run has a status");
    let detail = tail(&stderr, 2000);
    let suffix = if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    };
    match status.code() {
        Some(0) => {
            if let Ok(v) = serde_json::from_str::<Value>(stdout.trim())
                && !stdout.trim().is_empty()
                && !run.stdout.truncated
            {
                fields["json"] = v;
            }
            Outcome::Done(fields)
        }
        Some(code) => failed(
            format!("`{command}` exited with status {code}{suffix}"),
            true,
            fields,
        ),
        None => failed(
            format!("`{command}` was killed by a signal{suffix}"),
            true,
            fields,
        ),
    }
}

/// Runs one `http` task.
fn run_http(agent: &ureq::Agent, cfg: &Executors, task: &Claimed) -> Outcome {
    let req = &task.input;
    let mut used = Vec::new();
    let prepared = (|| -> Result<_, String> {
        let method = str_field(req, "method").unwrap_or("GET");
        let url = cfg.fill(str_field(req, "url").unwrap_or_default(), &mut used)?;
        let mut b = ureq::http::Request::builder().method(method).uri(&url);
        let mut has_type = false;
        if let Some(Value::Object(h)) = req.get("headers") {
            for (k, v) in h {
                has_type |= k.eq_ignore_ascii_case("content-type");
                b = b.header(
                    k.as_str(),
                    cfg.fill(v.as_str().unwrap_or_default(), &mut used)?,
                );
            }
        }
        let body = match req.get("body") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => {
                if !has_type {
                    b = b.header("Content-Type", "text/plain; charset=utf-8");
                }
                cfg.fill(s, &mut used)?.into_bytes()
            }
            Some(v) => {
                if !has_type {
                    b = b.header("Content-Type", "application/json");
                }
                cfg.fill_json(v, &mut used)?.to_string().into_bytes()
            }
        };
        b.body(body)
            .map_err(|e| format!("the request is not valid: {e}"))
    })();
    let request = match prepared {
        Ok(r) => r,
        Err(e) => return failed(e, false, Value::Null),
    };
    let timeout = task
        .timeout_ms
        .map_or(cfg.http_timeout, Duration::from_millis);
    let request = agent
        .configure_request(request)
        .timeout_global(Some(timeout))
        .build();
    let started = Instant::now();
    let mut resp = match agent.run(request) {
        Ok(r) => r,
        Err(e) => {
            return failed(
                cfg.mask(&format!("the request failed: {e}"), &used),
                true,
                Value::Null,
            );
        }
    };
    let status = resp.status().as_u16();
    let mut headers = serde_json::Map::new();
    for (k, v) in resp.headers() {
        if let Ok(v) = v.to_str() {
            headers.insert(k.as_str().to_string(), Value::String(cfg.mask(v, &used)));
        }
    }
    let is_json = headers
        .get("content-type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.contains("json"));
    let bytes = match resp
        .body_mut()
        .with_config()
        .limit(cfg.http_max_response as u64)
        .read_to_vec()
    {
        Ok(b) => b,
        Err(ureq::Error::BodyExceedsLimit(_)) => {
            return failed(
                format!(
                    "the response body is over the limit of {} bytes (setting `executors.http.max_response`)",
                    cfg.http_max_response
                ),
                false,
                json!({"status": status}),
            );
        }
        Err(e) => {
            return failed(
                format!("reading the response failed: {e}"),
                true,
                json!({"status": status}),
            );
        }
    };
    let body_text = cfg.mask(&text(&bytes), &used);
    let body = if bytes.is_empty() {
        Value::Null
    } else if is_json {
        serde_json::from_str(&body_text).unwrap_or(Value::String(body_text))
    } else {
        Value::String(body_text)
    };
    let fields = json!({
        "status": status, "headers": headers, "body": body,
        "duration_ms": started.elapsed().as_millis() as u64,
    });
    match status {
        200..=299 => Outcome::Done(fields),
        _ => {
            let retryable = matches!(status, 408 | 425 | 429 | 500..=599);
            let detail = match &fields["body"] {
                Value::String(s) => tail(s, 500).to_string(),
                Value::Null => String::new(),
                v => tail(&v.to_string(), 500).to_string(),
            };
            failed(
                if detail.is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status}: {detail}")
                },
                retryable,
                fields,
            )
        }
    }
}

/// Claims and runs the tasks of the built-in executors, with the engine's [`Executors`]
/// settings, until stopped. Commands still running when it stops are killed, and their
/// attempts fail as retryable; requests end by their timeout and are not waited for.
pub struct ExecutorService<S: Store> {
    engine: Engine<S>,
}

impl<S: Store + Send + Sync + 'static> ExecutorService<S> {
    /// The executors of `engine`.
    pub fn new(engine: Engine<S>) -> ExecutorService<S> {
        ExecutorService { engine }
    }
}

impl<S: Store + Send + Sync + 'static> Service for ExecutorService<S> {
    fn name(&self) -> String {
        "cairn-executors".into()
    }

    fn run(self, shutdown: Shutdown) {
        let engine = self.engine;
        let cfg = Arc::new(engine.config().executors.clone());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent("cairn-http-executor")
            .build()
            .into();
        let running = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            let http = {
                let (engine, cfg, shutdown) = (engine.clone(), Arc::clone(&cfg), shutdown.clone());
                std::thread::Builder::new()
                    .name(format!("cairn-{HTTP_QUEUE}"))
                    .spawn_scoped(scope, move || {
                        let concurrency = cfg.http_concurrency;
                        let run = {
                            let engine = engine.clone();
                            move |task: Claimed| {
                                let outcome = run_http(&agent, &cfg, &task);
                                report(&engine, &task, outcome)
                            }
                        };
                        dispatch(&engine, HTTP_QUEUE, concurrency, &shutdown, run, None)
                    })
            };
            let run = {
                let (engine, cfg, stop) = (engine.clone(), Arc::clone(&cfg), shutdown.clone());
                move |task: Claimed| {
                    let outcome = run_exec(&engine, &cfg, &task, &stop);
                    report(&engine, &task, outcome)
                }
            };
            dispatch(
                &engine,
                EXEC_QUEUE,
                cfg.exec_concurrency,
                &shutdown,
                run,
                Some(&running),
            );
            if let Ok(h) = http {
                let _ = h.join();
            }
        });
        // Commands see the stop within a beat and are killed; their reports are waited for.
        for h in running.into_inner().unwrap_or_else(|e| e.into_inner()) {
            let _ = h.join();
        }
    }
}

/// One loop per executor: claims as many tasks as it has free slots and runs each on its
/// own thread, until `shutdown`. Threads are kept in `running` to be joined on stop.
fn dispatch<S: Store + Send + Sync + 'static>(
    engine: &Engine<S>,
    queue: &'static str,
    concurrency: usize,
    shutdown: &Shutdown,
    run: impl Fn(Claimed) + Send + Sync + 'static,
    running: Option<&Mutex<Vec<std::thread::JoinHandle<()>>>>,
) {
    let worker = format!("cairn:{}", queue.trim_start_matches("cairn."));
    let busy = Arc::new(AtomicUsize::new(0));
    let run = Arc::new(run);
    let queues = vec![queue.to_string()];
    while !shutdown.is_triggered() {
        let free = concurrency
            .max(1)
            .saturating_sub(busy.load(Ordering::Acquire));
        if free == 0 {
            shutdown.wait(Duration::from_millis(10));
            continue;
        }
        let ready = engine.tasks_ready();
        let stamp = ready.stamp(&queues);
        let claimed = match engine.claim_reserved(&queues, &worker, free, DEFAULT_LEASE) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(queue, error = %e, "claiming failed");
                Vec::new()
            }
        };
        if claimed.is_empty() {
            // Woken by tasks of other queues, go back to waiting: the store is read again
            // when this queue has new tasks, or every 250 ms for retries.
            let until = Instant::now() + Duration::from_millis(250);
            while ready.stamp(&queues) == stamp && !shutdown.is_triggered() {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                ready.wait(left.min(Duration::from_millis(50)));
            }
            continue;
        }
        for task in claimed {
            busy.fetch_add(1, Ordering::AcqRel);
            let (run, done) = (Arc::clone(&run), Arc::clone(&busy));
            let handle = std::thread::Builder::new()
                .name(format!("cairn-{queue}-task"))
                .spawn(move || {
                    run(task);
                    done.fetch_sub(1, Ordering::AcqRel);
                });
            match (handle, running) {
                (Ok(h), Some(list)) => {
                    let mut list = list.lock().unwrap_or_else(|e| e.into_inner());
                    list.retain(|h| !h.is_finished());
                    list.push(h);
                }
                (Ok(_), None) => {}
                (Err(e), _) => {
                    tracing::warn!(queue, error = %e, "cannot start a thread for a task");
                    busy.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }
}

fn report<S: Store>(engine: &Engine<S>, task: &Claimed, outcome: Outcome) {
    let result = match outcome {
        Outcome::Done(output) => engine
            .complete(&task.id, task.attempt, output, Usage::default())
            .map(|_| ()),
        Outcome::Failed {
            error,
            retryable,
            details,
        } => engine
            .fail_with(
                &task.id,
                task.attempt,
                &error,
                retryable,
                Usage::default(),
                details,
            )
            .map(|_| ()),
        Outcome::Abandoned => Ok(()),
    };
    // A stale report (reclaimed or cancelled meanwhile) changes nothing; any other error
    // leaves the lease to expire, and the attempt is retried.
    if let Err(e) = result
        && !matches!(e, Error::Conflict(_) | Error::NotFound(_))
    {
        tracing::warn!(task = %task.id, attempt = task.attempt, error = %e, "reporting the outcome failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_captured_limited_and_timed_out() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "cat; printf 'e%.0s' $(seq 1 100) >&2; exit 3"]);
        let r = run_process(
            cmd,
            b"hello".to_vec(),
            3,
            10,
            None,
            Duration::from_secs(1),
            &mut || Ok(()),
        )
        .unwrap();
        assert_eq!(r.status.unwrap().code(), Some(3));
        assert_eq!(r.stdout.bytes, b"hel");
        assert!(r.stdout.truncated);
        assert_eq!(r.stderr.bytes, b"eeeeeeeeee");
        assert!(r.stderr.truncated);

        // The timeout kills the whole group, grandchildren too, so the pipes close.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & sleep 30"]);
        let r = run_process(
            cmd,
            Vec::new(),
            100,
            100,
            Some(Duration::from_millis(200)),
            Duration::from_secs(1),
            &mut || Ok(()),
        )
        .unwrap();
        assert!(r.timed_out);
        assert!(r.status.is_none());
        assert!(r.duration < Duration::from_secs(10), "{:?}", r.duration);

        // A beat that says stop kills the run.
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let r = run_process(
            cmd,
            Vec::new(),
            100,
            100,
            None,
            Duration::from_millis(20),
            &mut || Err("stale".into()),
        )
        .unwrap();
        assert_eq!(r.abandoned.as_deref(), Some("stale"));
        assert!(
            run_process(
                Command::new("/no/such/command"),
                Vec::new(),
                1,
                1,
                None,
                Duration::from_secs(1),
                &mut || Ok(())
            )
            .is_err()
        );
    }
}
