//! A helper program (a node or Python script driving a real SIP stack) that
//! prints one JSON object per line on stdout: started by the test, read
//! with bounded waits, and killed by its PID when dropped, along with any
//! browser it reported (`{"event":"browser","pid":N}`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

pub struct Script {
    name: String,
    child: Child,
    lines: Receiver<serde_json::Value>,
    /// Every line read so far (for failure messages).
    pub seen: Vec<serde_json::Value>,
    stderr: std::path::PathBuf,
    /// A browser the script started (killed too, if still there).
    browser: Option<u32>,
}

impl Script {
    /// Starts `program args` in `dir`, its stderr kept in `dir/<name>.err`.
    pub fn start(name: &str, dir: &Path, program: &str, args: &[String]) -> Script {
        let stderr = dir.join(format!("{name}.err"));
        let file = std::fs::File::create(&stderr).expect("stderr file");
        let mut child = Command::new(program)
            .args(args)
            .current_dir(super::repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} for {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Script { name: name.to_owned(), child, lines: rx, seen: Vec::new(), stderr, browser: None }
    }

    /// Reads lines until one has `"event": event` (returned); panics, with
    /// what the script said, on an `error` event, on exit, or after
    /// `timeout`.
    pub fn expect(&mut self, event: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if v["event"] == "browser" {
                        self.browser = v["pid"].as_u64().map(|p| p as u32);
                    }
                    if v["event"] == event {
                        return v;
                    }
                    if v["event"] == "error" {
                        panic!("{}: {}\n{}", self.name, v["message"], self.report());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{}: no {event:?} within {timeout:?}\n{}", self.name, self.report())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let st = self.wait(Duration::from_secs(5));
                    panic!("{}: exited ({st:?}) before {event:?}\n{}", self.name, self.report())
                }
            }
        }
    }

    /// Waits (bounded) for the exit status; `None` if still running.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts the script ends with exit code 0 within `timeout`.
    pub fn assert_success(&mut self, timeout: Duration) {
        match self.wait(timeout) {
            Some(st) if st.success() => {}
            st => panic!("{}: ended with {st:?}\n{}", self.name, self.report()),
        }
    }

    /// The exit status within `timeout` (panics if it is still running).
    pub fn assert_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.wait(timeout) {
            Some(st) => st,
            None => panic!("{}: still running after {timeout:?}\n{}", self.name, self.report()),
        }
    }

    /// What it printed and wrote to stderr.
    pub fn report(&self) -> String {
        let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<String> = self.seen.iter().map(|v| v.to_string()).collect();
        format!("--- stdout\n{}\n--- stderr\n{err}", lines.join("\n"))
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SIGTERM first: playwright closes its browser on it.
            let pid = self.child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            if self.wait(Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if let Some(pid) = self.browser {
            // Only if that PID is still the browser it started.
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("chromium") {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
    }
}
