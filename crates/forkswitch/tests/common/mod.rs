//! Test harness: starts the real forkswitch binary on free ports (port 0,
//! read back from its JSON "listening" log lines), talks to it over raw
//! sockets and SIPp, and kills it by PID when dropped. Every wait is bounded.
//! Ports for SIPp and in-process peers, and readiness, come from [`ports`].
#![allow(dead_code)]

pub mod fork;
pub mod http;
pub mod lossy;
pub mod netns;
pub mod ports;
pub mod script;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long any single expected event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

thread_local! {
    /// Whether the servers this test thread starts keep their records in
    /// PostgreSQL ([`on_postgres`]).
    static ON_POSTGRES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `test` with its servers on PostgreSQL (a new database of this test
/// binary's cluster each) instead of SQLite.
pub fn on_postgres(test: fn()) {
    ON_POSTGRES.set(true);
    test();
}

/// `also_on_postgres!(test_fn)`: a test `test_fn::postgres` that runs
/// `test_fn` again with its servers on PostgreSQL.
#[macro_export]
macro_rules! also_on_postgres {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn postgres() {
                    $crate::common::on_postgres(super::$name);
                }
            }
        )*
    };
}

pub struct Server {
    child: Child,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    /// TLS, WS and WSS listeners, when configured (else port 0).
    pub tls: SocketAddr,
    pub ws: SocketAddr,
    pub wss: SocketAddr,
    /// The REST API (`[http] listen`, on a port picked at run time).
    pub http: SocketAddr,
    lines: Receiver<serde_json::Value>,
    pub dir: tempfile::TempDir,
    /// The server's `[database] url` (its SQLite file in `dir`, or a
    /// database of the test binary's PostgreSQL cluster).
    pub store_url: String,
    config: PathBuf,
    /// The "location loaded" line of the last start.
    pub loaded: serde_json::Value,
    /// The "closed records a previous run left live" line of the last
    /// start (`Null` when there was nothing to close).
    pub closed_live: serde_json::Value,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with("")
    }

    /// Starts the server with the default config's settings on port 0 plus
    /// `extra` TOML appended. It runs in a temporary directory that holds its
    /// config and database.
    pub fn start_with(extra: &str) -> Server {
        Self::start_in("", extra, Stderr::Inherit)
    }

    /// [`Server::start_with`], with `sip` added to the `[sip]` table (more
    /// listeners: `tls = ["127.0.0.1:0"]`).
    pub fn start_with_sip(sip: &str, extra: &str) -> Server {
        Self::start_in(sip, extra, Stderr::Inherit)
    }

    fn start_in(sip: &str, extra: &str, stderr: Stderr) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = if extra.contains("[database]") {
            String::new()
        } else if ON_POSTGRES.get() {
            format!("[database]\nurl = \"{}\"\n", pgcluster::shared().database())
        } else {
            "[database]\npath = \"forkswitch.db\"\n".to_owned()
        };
        let http = if extra.contains("[http]") {
            String::new()
        } else {
            "[http]\nlisten = \"127.0.0.1:0\"\n".to_owned()
        };
        let text = format!(
            "[sip]\nudp = [\"127.0.0.1:0\"]\ntcp = [\"127.0.0.1:0\"]\n{sip}[log]\nlevel = \"debug\"\n{db}{http}{extra}"
        );
        Self::start_config(dir, &text, stderr)
    }

    /// Starts the server on the shipped `config/forkswitch.toml` (its
    /// extensions test11-test13, ring groups 800-802), every listener on
    /// port 0, with `sip` added to its `[sip]` table and `extra` appended.
    /// A `[table]` of `extra` replaces the shipped one (`[media]` with
    /// `mode = "rtpengine"`).
    pub fn start_default_config(sip: &str, extra: &str) -> Server {
        let shipped = std::fs::read_to_string(repo_root().join("config/forkswitch.toml"))
            .expect("config/forkswitch.toml");
        let replaced: Vec<&str> =
            extra.lines().filter(|l| l.starts_with('[') && !l.starts_with("[[")).collect();
        let mut text = String::new();
        let mut skipping = false;
        for line in shipped.lines() {
            if line.starts_with('[') {
                skipping = replaced.contains(&line.trim_end());
            }
            if skipping {
                continue;
            }
            let line = match line {
                l if l.starts_with("udp = [") => "udp = [\"127.0.0.1:0\"]",
                l if l.starts_with("tcp = [") => "tcp = [\"127.0.0.1:0\"]",
                l if l.starts_with("listen = \"127.0.0.1:8080\"") => "listen = \"127.0.0.1:0\"",
                l => l,
            };
            text.push_str(line);
            text.push('\n');
            if line == "[sip]" {
                text.push_str(sip);
            }
        }
        text.push_str(extra);
        Self::start_config(tempfile::tempdir().expect("tempdir"), &text, Stderr::Inherit)
    }

    /// Starts the server on exactly the config `text` (it must listen on UDP
    /// and TCP) in a new temporary directory; its stderr goes to
    /// `stderr.log` there.
    pub fn start_text(text: &str) -> Server {
        Self::start_config(tempfile::tempdir().expect("tempdir"), text, Stderr::Logged)
    }

    /// Kills the server with SIGKILL (no shutdown work at all) and waits
    /// for it to be gone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn start_config(dir: tempfile::TempDir, text: &str, stderr: Stderr) -> Server {
        let store_url = text
            .lines()
            .find_map(|l| l.strip_prefix("url = \"postgres"))
            .map(|rest| format!("postgres{}", rest.trim_end_matches('"')))
            .unwrap_or_else(|| format!("sqlite:{}", dir.path().join("forkswitch.db").display()));
        let cfg = dir.path().join("forkswitch.toml");
        std::fs::write(&cfg, text).expect("write config");
        let (child, lines) = spawn(&cfg, dir.path(), stderr);
        let mut server = Server {
            child,
            udp: "0.0.0.0:0".parse().expect("addr"),
            tcp: "0.0.0.0:0".parse().expect("addr"),
            tls: "0.0.0.0:0".parse().expect("addr"),
            ws: "0.0.0.0:0".parse().expect("addr"),
            wss: "0.0.0.0:0".parse().expect("addr"),
            http: "0.0.0.0:0".parse().expect("addr"),
            lines,
            dir,
            store_url,
            config: cfg,
            loaded: serde_json::Value::Null,
            closed_live: serde_json::Value::Null,
        };
        server.await_ready();
        server
    }

    fn await_ready(&mut self) {
        self.closed_live = serde_json::Value::Null;
        self.wait_log(
            |v| v["message"] == "forkswitch ready",
            WAIT,
            |v, s| {
                if v["message"] == "listening" {
                    let addr: SocketAddr =
                        v["addr"].as_str().expect("addr").parse().expect("addr parses");
                    match v["transport"].as_str() {
                        Some("UDP") => s.udp = addr,
                        Some("TCP") => s.tcp = addr,
                        Some("TLS") => s.tls = addr,
                        Some("WS") => s.ws = addr,
                        Some("WSS") => s.wss = addr,
                        _ => {}
                    }
                }
                if v["message"] == "location loaded" {
                    s.loaded = v.clone();
                }
                if v["message"] == "closed records a previous run left live" {
                    s.closed_live = v.clone();
                }
                if v["message"] == "http listening" {
                    s.http = v["addr"].as_str().expect("addr").parse().expect("addr parses");
                }
            },
        );
        assert_ne!(self.udp.port(), 0, "server did not report its UDP port");
        // What the log says, checked against what the kernel says.
        let pid = self.child.id();
        // /proc/net/* is read in pages, not atomically: a socket can be
        // missed while other tests open and close theirs. Look again for a
        // while before calling it a lie.
        for (proto, addr) in [(ports::Proto::Udp, self.udp), (ports::Proto::Tcp, self.tcp)] {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !ports::held_by(pid, proto, addr.port()) {
                assert!(Instant::now() < deadline, "server {pid} holds no {proto:?} {addr}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Stops the server with SIGTERM (it flushes the store) and starts it
    /// again on the same config and database (new ports).
    pub fn stop_and_restart(&mut self) {
        let pid = self.child.id();
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let deadline = Instant::now() + WAIT;
        while self.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "server did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        let (child, lines) = spawn(&self.config, self.dir.path(), Stderr::Inherit);
        self.child = child;
        self.lines = lines;
        self.await_ready();
    }

    /// Kills the server with SIGKILL (no shutdown work at all) and starts it
    /// again on the same config and database (new ports).
    pub fn kill9_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, lines) = spawn(&self.config, self.dir.path(), Stderr::Inherit);
        self.child = child;
        self.lines = lines;
        self.await_ready();
    }

    /// Reads log lines until `done` matches one (returned), calling `each` on
    /// every line; panics after `timeout`.
    pub fn wait_log(
        &mut self,
        done: impl Fn(&serde_json::Value) -> bool,
        timeout: Duration,
        mut each: impl FnMut(&serde_json::Value, &mut Server),
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    each(&v, self);
                    if done(&v) {
                        return v;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!("timed out waiting for a log line"),
                Err(RecvTimeoutError::Disconnected) => panic!("server exited early"),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id();
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(Instant::now() < deadline, "server did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Where the server's stderr goes.
#[derive(Clone, Copy)]
enum Stderr {
    /// The test's own.
    Inherit,
    /// `stderr.log` in the server's directory ([`Server::stderr_log`]).
    Logged,
}

fn spawn(cfg: &Path, dir: &Path, stderr: Stderr) -> (Child, Receiver<serde_json::Value>) {
    let stderr = match stderr {
        Stderr::Inherit => Stdio::inherit(),
        Stderr::Logged => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("stderr.log"))
            .expect("stderr.log")
            .into(),
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_forkswitch"))
        .args(["run", "--config"])
        .arg(cfg)
        .args(["--log-format", "json"])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn forkswitch");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = channel();
    // Every line as written, too (`stdout.log` in the server's directory).
    let mut copy = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stdout.log"))
        .expect("stdout.log");
    std::thread::spawn(move || {
        use std::io::Write;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = writeln!(copy, "{line}");
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    (child, rx)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A UDP socket on 127.0.0.1 with a bounded read timeout.
pub fn udp_client() -> UdpSocket {
    let s = ports::udp_peer();
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s
}

/// Receives one datagram (panics on timeout).
pub fn recv(s: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    let (n, _) = s.recv_from(&mut buf).expect("no datagram within the wait");
    buf.truncate(n);
    buf
}

/// Status code of a response.
pub fn status_of(resp: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(resp);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not a response: {text}"))
}

/// Call-ID of a message (first Call-ID / i header).
pub fn call_id_of(msg: &[u8]) -> String {
    let text = String::from_utf8_lossy(msg);
    for line in text.split("\r\n") {
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("call-id:").or_else(|| lower.strip_prefix("i:")) {
            let start = line.len() - v.len();
            return line[start..].trim().to_owned();
        }
    }
    String::new()
}

/// An OPTIONS to the server from `local`.
pub fn options(local: SocketAddr, server: SocketAddr, transport: &str, call_id: &str) -> String {
    format!(
        "OPTIONS sip:ping@{server} SIP/2.0\r\nVia: SIP/2.0/{transport} {local};branch=z9hG4bK{call_id};rport\r\nMax-Forwards: 70\r\nFrom: <sip:t@{local}>;tag=1\r\nTo: <sip:ping@{server}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A TCP connection with bounded timeouts.
pub fn tcp_client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Reads one SIP message (head + Content-Length body) from a stream (TCP,
/// or TLS over it).
pub fn read_stream_message<S: std::io::Read + ?Sized>(s: &mut S, pending: &mut Vec<u8>) -> Vec<u8> {
    loop {
        if let Some(pos) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..pos]).to_ascii_lowercase();
            let cl = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").or_else(|| l.strip_prefix("l:")))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let total = pos + 4 + cl;
            if pending.len() >= total {
                let msg = pending[..total].to_vec();
                pending.drain(..total);
                return msg;
            }
        }
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).expect("read within the wait");
        assert!(n > 0, "connection closed");
        pending.extend_from_slice(&buf[..n]);
    }
}

/// Runs SIPp with `args` in `dir` on a local port of the harness's choosing
/// (`args` carry no `-p`; TCP when they say `-t t1`/`-t tn`), retrying on a
/// fresh port if SIPp could not bind; kills it after `timeout`. Returns its
/// status and stderr.
pub fn sipp(dir: &Path, args: &[String], timeout: Duration) -> (ExitStatus, String) {
    let mut run = start_sipp(dir, args);
    match run.wait_for(timeout) {
        Some(st) => (st, run.stderr()),
        None => panic!("sipp {args:?} did not finish within {timeout:?}\n{}", run.output()),
    }
}

pub fn scenario(name: &str) -> String {
    repo_root().join("sipp-scenarios").join(name).to_string_lossy().into_owned()
}

/// A SIPp instance playing a phone (UAS) for one call.
pub struct Phone {
    sipp: ports::PortChild,
    pub port: u16,
    pub name: String,
}

impl Phone {
    /// Starts `scenario` on a free port; returns once SIPp holds the port
    /// (observed in /proc), retrying on a fresh port if it could not bind.
    pub fn start(dir: &Path, scenario_file: &str, extra: &[&str]) -> Phone {
        let sipp = ports::spawn_on_free_port(
            &format!("phone sipp {scenario_file}"),
            ports::Proto::Udp,
            |port| phone_command(dir, scenario_file, extra, port),
        );
        Self::ready(sipp, scenario_file)
    }

    /// Starts `scenario` on a port the server already knows from that port:
    /// the switch calls a binding where its REGISTER came from, so the
    /// REGISTER goes out from the very port SIPp then answers on.
    /// `announce(sock)` sends it from `sock` (a socket of this process on a
    /// fresh port, closed right before SIPp binds that port); with
    /// `already = Some(port)` a previous phone's announcement is reused. If
    /// another process takes the port in between, `withdraw(port)` undoes
    /// that announcement and it all starts again on a fresh port.
    pub fn start_announced(
        dir: &Path,
        scenario_file: &str,
        extra: &[&str],
        already: Option<u16>,
        mut announce: impl FnMut(&UdpSocket),
        mut withdraw: impl FnMut(u16),
    ) -> Phone {
        let what = format!("phone sipp {scenario_file}");
        let mut port = already;
        let mut lost = Vec::new();
        for _ in 0..ports::ATTEMPTS {
            let p = port.take().unwrap_or_else(|| {
                let sock = ports::bind_udp_candidate();
                sock.set_read_timeout(Some(WAIT)).expect("timeout");
                announce(&sock);
                sock.local_addr().expect("addr").port()
            });
            let cmd = phone_command(dir, scenario_file, extra, p);
            match ports::spawn_on(&what, ports::Proto::Udp, p, cmd) {
                Ok(sipp) => return Self::ready(sipp, scenario_file),
                Err(output) => {
                    lost.push(format!("port {p}: {output}"));
                    withdraw(p);
                }
            }
        }
        panic!("{what}: could not bind in {} attempts:\n{}", ports::ATTEMPTS, lost.join("\n"));
    }

    fn ready(mut sipp: ports::PortChild, scenario_file: &str) -> Phone {
        if let Some(st) = sipp.status() {
            panic!("phone {scenario_file} exited before it was ready: {st:?}\n{}", sipp.output());
        }
        Phone { port: sipp.port, sipp, name: scenario_file.to_owned() }
    }

    /// `sip:user@127.0.0.1:port`
    pub fn uri(&self, user: &str) -> String {
        format!("sip:{user}@127.0.0.1:{}", self.port)
    }

    /// Waits (bounded) for SIPp to end and asserts its call succeeded.
    pub fn assert_ok(mut self) {
        let Some(st) = self.sipp.wait_for(Duration::from_secs(40)) else {
            panic!("phone {} did not finish\n{}", self.name, self.sipp.output());
        };
        let err = self.sipp.stderr();
        assert!(st.success(), "phone {} on {} failed: {st:?} {err}", self.name, self.port);
    }
}

/// A SIPp phone playing `scenario` for one call, registered on `server` as
/// `user` (password `pw<nn>` for `test<nn>`) from the port it answers on.
pub fn phone_registered_on(server: &Server, user: &str, scenario: &str, args: &[&str]) -> Phone {
    let pw = format!("pw{}", user.trim_start_matches("test"));
    let register = |sock: &UdpSocket| {
        let resp = register_from(sock, server.udp, user, &pw);
        assert!(resp.starts_with("SIP/2.0 200"), "{user}: {resp}");
    };
    let unregister = |_lost_port| unregister_all(server.udp, user, &pw);
    Phone::start_announced(server.dir.path(), scenario, args, None, register, unregister)
}

/// SIPp answering `scenario_file` on 127.0.0.1:`port`, for one call.
pub fn phone_command(dir: &Path, scenario_file: &str, extra: &[&str], port: u16) -> Command {
    let mut c = Command::new("sipp");
    c.args(["-sf", &scenario(scenario_file), "-p", &port.to_string(), "-i", "127.0.0.1"])
        .args(["-m", "1", "-nostdin", "-timeout", "30s", "-timeout_error"])
        .args(extra)
        .current_dir(dir);
    c
}

/// Runs a SIPp caller scenario against `target` for one call (UDP unless
/// `extra` says `-t t1`).
pub fn caller(dir: &Path, target: SocketAddr, service: &str, scenario_file: &str, extra: &[&str]) {
    let mut run = start_caller(dir, target, service, scenario_file, extra);
    match run.wait_for(Duration::from_secs(40)) {
        Some(st) => assert!(st.success(), "caller {scenario_file} failed: {st:?} {}", run.stderr()),
        None => panic!("caller {scenario_file} did not finish\n{}", run.output()),
    }
}

/// Starts a SIPp caller scenario against `target` for one call and returns
/// it running (killed by its PID when dropped): for a test that acts while
/// the call is up.
pub fn start_caller(
    dir: &Path,
    target: SocketAddr,
    service: &str,
    scenario_file: &str,
    extra: &[&str],
) -> ports::PortChild {
    let mut args: Vec<String> = [
        "-sf",
        &scenario(scenario_file),
        &target.to_string(),
        "-s",
        service,
        "-m",
        "1",
        "-i",
        "127.0.0.1",
        "-timeout",
        "30s",
        "-timeout_error",
        "-nostdin",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    start_sipp(dir, &args)
}

/// Starts SIPp with `args` (no `-p`: the harness picks the port) in `dir`.
pub fn start_sipp(dir: &Path, args: &[String]) -> ports::PortChild {
    assert!(!args.iter().any(|a| a == "-p"), "the harness picks SIPp's port: {args:?}");
    let tcp = args.windows(2).any(|w| w[0] == "-t" && w[1].starts_with('t'));
    let proto = if tcp { ports::Proto::Tcp } else { ports::Proto::Udp };
    ports::spawn_on_free_port(&format!("sipp {args:?}"), proto, |port| {
        let mut c = Command::new("sipp");
        // Trace times in UTC, as the records' (crash.rs compares them).
        c.args(args).args(["-p", &port.to_string()]).current_dir(dir).env("TZ", "UTC");
        c
    })
}

/// REGISTERs `user@test` (password `password`, MD5 digest) from `sock`, with
/// a Contact at the socket's own address; returns the final response.
pub fn register_from(sock: &UdpSocket, server: SocketAddr, user: &str, password: &str) -> String {
    register_as(sock, server, user, password, true)
}

/// REGISTER with a digest answer to the first challenge; without `contact`
/// it is a query (the 200 lists the bindings). Returns the final response.
pub fn register_as(
    sock: &UdpSocket,
    server: SocketAddr,
    user: &str,
    password: &str,
    contact: bool,
) -> String {
    let contact = if contact { Contact::Own } else { Contact::Query };
    register_with(sock, server, user, password, contact)
}

/// Removes every binding of `user@test` (`Contact: *`, `Expires: 0`) and
/// asserts the 200.
pub fn unregister_all(server: SocketAddr, user: &str, password: &str) {
    let resp = register_with(&udp_client(), server, user, password, Contact::Star);
    assert!(resp.starts_with("SIP/2.0 200"), "unregistering {user}: {resp}");
}

/// What a REGISTER asks for.
enum Contact {
    /// A binding at the sending socket's own address.
    Own,
    /// None: a query.
    Query,
    /// `*`: remove them all.
    Star,
}

fn register_with(
    sock: &UdpSocket,
    server: SocketAddr,
    user: &str,
    password: &str,
    contact: Contact,
) -> String {
    let local = sock.local_addr().expect("addr");
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let call_id = format!("reg-{user}-{}-{n}", local.port());
    let uri = format!("sip:{server}");
    let build = |cseq: u32, auth: Option<String>| {
        let mut m = format!(
            "REGISTER {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{call_id}{cseq};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@test>;tag=f{cseq}\r\nTo: <sip:{user}@test>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
        );
        match contact {
            Contact::Own => {
                m.push_str(&format!("Contact: <sip:{user}@{local}>\r\nExpires: 600\r\n"))
            }
            Contact::Query => {}
            Contact::Star => m.push_str("Contact: *\r\nExpires: 0\r\n"),
        }
        if let Some(a) = auth {
            m.push_str(&format!("Authorization: {a}\r\n"));
        }
        m.push_str("Content-Length: 0\r\n\r\n");
        m
    };
    sock.send_to(build(1, None).as_bytes(), server).expect("send");
    let challenge = String::from_utf8_lossy(&recv(sock)).into_owned();
    assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
    let www = challenge
        .split("\r\n")
        .find(|l| l.starts_with("WWW-Authenticate:") && l.contains("MD5"))
        .expect("an MD5 challenge");
    let nonce = www.split("nonce=\"").nth(1).and_then(|r| r.split('"').next()).expect("nonce");
    let auth = digest_answer(user, password, "REGISTER", &uri, nonce);
    sock.send_to(build(2, Some(auth)).as_bytes(), server).expect("send");
    String::from_utf8_lossy(&recv(sock)).into_owned()
}

/// The customer of the tenant the tests configure.
pub const CUSTOMER: &str = "5e4a0680-804e-11ec-8477-2fea5968d85b";

/// A digest answer (MD5, qop=auth, realm `test`) for `user` to a challenge
/// with `nonce`: the value of an Authorization / Proxy-Authorization header.
pub fn digest_answer(user: &str, password: &str, method: &str, uri: &str, nonce: &str) -> String {
    use sip_message::digest::{Algorithm, QopAuth, RequestDigest};
    let ha1 = registrar::ha1_md5(user, "test", password);
    let qop = Some(QopAuth { nc: b"00000001", cnonce: b"abc123", qop: b"auth" });
    let response = RequestDigest {
        algorithm: Algorithm::Md5,
        nonce: nonce.as_bytes(),
        qop,
        method: method.as_bytes(),
        uri: uri.as_bytes(),
    }
    .hex(&ha1);
    format!(
        "Digest username=\"{user}\", realm=\"test\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"abc123\""
    )
}

/// Waits (bounded) until the store holds a finished root groupcall, and
/// returns it with its calls.
pub fn finished_groupcall(server: &Server) -> (records::Groupcall, Vec<records::Call>) {
    use records::{CallStatus, GroupcallStatus, NIL};
    let db = db(server);
    let customer = uuid::Uuid::parse_str(CUSTOMER).expect("uuid");
    let deadline = Instant::now() + WAIT;
    loop {
        let gcs = db.list_groupcalls(customer, 100, None).expect("list");
        if let Some(root) =
            gcs.iter().find(|g| g.master_groupcall_id == NIL && g.status == GroupcallStatus::Hangup)
        {
            let calls: Vec<records::Call> =
                root.call_ids.iter().filter_map(|id| db.call(*id).ok().flatten()).collect();
            if calls.len() == root.call_ids.len()
                && calls.iter().all(|c| c.status == CallStatus::Hangup)
            {
                return (root.clone(), calls);
            }
        }
        assert!(Instant::now() < deadline, "no finished groupcall in the store: {gcs:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// REGISTERs `user@test` (digest over the 401) over the TCP connection
/// `conn`, with a Contact at the connection's own address (the phone has no
/// listening socket: calls must come back over this connection), and
/// asserts the 200.
pub fn register_over_tcp(
    conn: &mut TcpStream,
    pending: &mut Vec<u8>,
    server: SocketAddr,
    user: &str,
    password: &str,
) {
    use std::io::Write;
    let local = conn.local_addr().expect("addr");
    let register = |cseq: u32, auth: Option<String>| {
        let mut m = format!(
            "REGISTER sip:{server} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bKtcpreg{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@test>;tag=tr\r\nTo: <sip:{user}@test>\r\nCall-ID: tcp-reg-{user}-{}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{local};transport=tcp>\r\nExpires: 600\r\n",
            local.port()
        );
        if let Some(a) = auth {
            m.push_str(&format!("Authorization: {a}\r\n"));
        }
        m.push_str("Content-Length: 0\r\n\r\n");
        m
    };
    conn.write_all(register(1, None).as_bytes()).expect("write");
    let challenge = String::from_utf8_lossy(&read_stream_message(conn, pending)).into_owned();
    assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
    let nonce = challenge
        .split("nonce=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("nonce")
        .to_owned();
    let uri = format!("sip:{server}");
    let auth = digest_answer(user, password, "REGISTER", &uri, &nonce);
    conn.write_all(register(2, Some(auth)).as_bytes()).expect("write");
    let ok = String::from_utf8_lossy(&read_stream_message(conn, pending)).into_owned();
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
}

impl Server {
    /// [`Server::start_with`]'s config (port 0 everywhere, `extra`
    /// appended), with the server's stderr kept in `stderr.log` in its
    /// directory ([`Server::stderr_log`]): for a test that asserts the
    /// process printed no panic.
    pub fn start_with_stderr_logged(extra: &str) -> Server {
        Self::start_in("", extra, Stderr::Logged)
    }

    /// Kills the server with SIGKILL and starts it again on the same
    /// database and the same UDP, TCP and HTTP ports (the config's port-0
    /// listen addresses are rewritten to the ports the server had), as a
    /// supervisor restarting a crashed switch would: phones keep sending to
    /// the address they know. Its stderr goes to `stderr.log`. Panics if it
    /// came back elsewhere.
    pub fn kill9_and_restart_on_same_ports(&mut self) {
        let (udp, tcp, http) = (self.udp, self.tcp, self.http);
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.config).expect("read config");
        let text = text
            .replacen("udp = [\"127.0.0.1:0\"]", &format!("udp = [\"{udp}\"]"), 1)
            .replacen("tcp = [\"127.0.0.1:0\"]", &format!("tcp = [\"{tcp}\"]"), 1)
            .replacen("listen = \"127.0.0.1:0\"", &format!("listen = \"{http}\""), 1);
        std::fs::write(&self.config, text).expect("write config");
        let (child, lines) = spawn(&self.config, self.dir.path(), Stderr::Logged);
        self.child = child;
        self.lines = lines;
        self.await_ready();
        assert_eq!((self.udp, self.tcp, self.http), (udp, tcp, http), "restarted on other ports");
    }

    /// What the server wrote to stderr so far (with
    /// [`Server::start_with_stderr_logged`] or after
    /// [`Server::kill9_and_restart_on_same_ports`]; empty otherwise).
    pub fn stderr_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The server's JSON log lines so far, as written (`stdout.log`).
    pub fn stdout_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }
}

// ---- records of finished calls, read from the store ----

/// The server's store, opened beside it (SQLite or PostgreSQL).
pub fn db(server: &Server) -> std::sync::Arc<dyn store::Store> {
    let opts = store::Options { max_delay: Duration::ZERO, ..store::Options::default() };
    store::open(&server.store_url, opts).expect("db")
}

pub fn customer() -> uuid::Uuid {
    uuid::Uuid::parse_str(CUSTOMER).expect("uuid")
}

/// Polls the store (bounded) until a call record satisfies `done`.
pub fn await_call(
    server: &Server,
    what: &str,
    done: impl Fn(&records::Call) -> bool,
) -> records::Call {
    let db = db(server);
    let deadline = Instant::now() + WAIT;
    loop {
        let calls = db.list_calls(customer(), 200, None).expect("list");
        if let Some(c) = calls.iter().find(|c| done(c)) {
            return c.clone();
        }
        assert!(Instant::now() < deadline, "never {what}: {calls:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The newest finished root groupcall whose `destinations` are `members`,
/// and its calls (every leg dialed, in any child).
pub fn finished_root(
    server: &Server,
    members: &[&str],
) -> (records::Groupcall, Vec<records::Call>) {
    let mut roots = finished_roots(server, members, 1);
    roots.pop().expect("one root")
}

/// Once (bounded) at least `n` root groupcalls whose `destinations` are
/// `members` are finished with every leg over: each with its calls (every
/// leg dialed, in any child), oldest first.
pub fn finished_roots(
    server: &Server,
    members: &[&str],
    n: usize,
) -> Vec<(records::Groupcall, Vec<records::Call>)> {
    let db = db(server);
    let deadline = Instant::now() + WAIT;
    loop {
        let gcs = db.list_groupcalls(customer(), 500, None).expect("list");
        let calls = db.list_calls(customer(), 500, None).expect("calls");
        let mut done: Vec<_> = gcs
            .iter()
            .filter(|g| {
                g.master_groupcall_id == records::NIL
                    && g.status == records::GroupcallStatus::Hangup
                    && g.destinations.iter().map(|d| d.target.as_str()).eq(members.iter().copied())
            })
            .map(|root| {
                let legs: Vec<records::Call> = calls
                    .iter()
                    .filter(|c| {
                        gcs.iter().any(|g| g.call_ids.contains(&c.id) && in_tree(&gcs, g, root.id))
                    })
                    .cloned()
                    .collect();
                (root.clone(), legs)
            })
            .filter(|(_, legs)| legs.iter().all(|c| c.status == records::CallStatus::Hangup))
            .collect();
        if done.len() >= n {
            done.sort_by_key(|(g, _)| g.tm_create);
            return done;
        }
        assert!(Instant::now() < deadline, "not {n} finished groupcalls of {members:?}: {gcs:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `g` is `root` or below it.
pub fn in_tree(all: &[records::Groupcall], g: &records::Groupcall, root: uuid::Uuid) -> bool {
    let mut cur = g;
    for _ in 0..16 {
        if cur.id == root {
            return true;
        }
        match all.iter().find(|p| p.id == cur.master_groupcall_id) {
            Some(p) => cur = p,
            None => return false,
        }
    }
    false
}

/// `forkswitch gen-cert` into a fresh directory (its `cert.pem` and
/// `key.pem`, self-signed for localhost and 127.0.0.1).
pub fn gen_cert() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("dir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_forkswitch"))
        .arg("gen-cert")
        .arg(dir.path())
        .output()
        .expect("run gen-cert");
    assert!(out.status.success(), "gen-cert: {}", String::from_utf8_lossy(&out.stderr));
    dir
}

/// The `[tls]` section serving `certs`' (a [`gen_cert`] directory)
/// certificate and key.
pub fn tls_section(certs: &std::path::Path) -> String {
    let path = |f: &str| certs.join(f).to_string_lossy().into_owned();
    format!("[tls]\ncert = {:?}\nkey = {:?}\n", path("cert.pem"), path("key.pem"))
}
