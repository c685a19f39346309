//! Ports for the processes and peers a test starts, and readiness that never
//! touches them. Every port a test hands to a child process goes through
//! here: SIPp phones, SIPp callers and registrars ([`spawn_on_free_port`],
//! [`spawn_on`]); in-process peers (raw-socket phones, the fake DNS server)
//! get a socket from [`udp_peer`]; the server binds port 0 itself and reports
//! its ports in its log, which [`held_by`] double-checks.
//!
//! Why it works this way (issue 14):
//!
//! - Nothing here binds a port to learn whether it is free or whether a child
//!   has taken it. Such a probe holds the port for an instant, and a child
//!   binding at that instant fails. Readiness is observed instead: a child is
//!   ready once `/proc/net/{udp,udp6}` (or `tcp`, `tcp6`) lists a socket on
//!   its port whose inode is one of the child's own descriptors
//!   (`/proc/PID/fd`), so a socket of some other process on that port never
//!   counts. The state is polled every [`POLL`], up to a deadline.
//! - SIPp has no "bind port 0" (without `-p` it scans 5060..5119 first), so
//!   the port is chosen here, without opening any socket (so there is no
//!   pick, release, reuse window): at random, from outside the kernel's
//!   ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`, so no port-0
//!   bind on the machine, such as the server's, a test socket's or an
//!   outbound connection's, can be handed it meanwhile), never twice in one
//!   test process, and not one `/proc` shows in use.
//! - That leaves collisions with other processes that choose ports
//!   themselves (a second test run, say). The child then fails to bind and
//!   exits (SIPp: status 254, "Unable to bind"), and the start is retried on
//!   a fresh port, [`ATTEMPTS`] times at most; the final panic carries each
//!   attempt's stderr and stdout.
//! - In-process peers bind port 0 and keep the socket as long as they serve:
//!   the socket that gets the port is the one that uses it, so no window
//!   exists to close.

use std::collections::HashSet;
use std::io::Read;
use std::net::UdpSocket;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Starts tried, each on a fresh port, before a child that cannot bind fails
/// the test.
pub const ATTEMPTS: usize = 5;
/// How often the observed state (`/proc`, the child's status) is read.
pub const POLL: Duration = Duration::from_millis(2);
/// How long a child may take to bind its port.
pub const READY_WITHIN: Duration = super::WAIT;
/// How long output readers get to reach end-of-file once a child has exited.
const SETTLE: Duration = Duration::from_secs(2);
/// The lowest port chosen (well above SIPp's own defaults: 5060.. for SIP,
/// 6000.. for media, 8888.. for its control socket).
const FLOOR: u16 = 20000;

/// The socket tables a readiness check looks in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    fn tables(self) -> [&'static str; 2] {
        match self {
            Proto::Udp => ["udp", "udp6"],
            Proto::Tcp => ["tcp", "tcp6"],
        }
    }
}

/// `(local port, inode)` of every socket in `/proc/thread-self/net/<table>`:
/// the calling thread's network namespace (`/proc/net` is the main
/// thread's, and a test may run in its own, see [`super::netns`]).
fn sockets(table: &str) -> Vec<(u16, u64)> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/thread-self/net/{table}")) else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            // sl local_address rem_address st queues tr:when retrnsmt uid timeout inode ...
            let f: Vec<&str> = line.split_whitespace().collect();
            let port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            let inode = f.get(9)?.parse().ok()?;
            Some((port, inode))
        })
        .collect()
}

/// Inodes of the sockets among process `pid`'s file descriptors.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    dir.filter_map(|e| {
        let target = std::fs::read_link(e.ok()?.path()).ok()?;
        let t = target.to_str()?;
        t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
    })
    .collect()
}

/// Whether process `pid` itself holds a `proto` socket bound to local
/// `port` (any address, IPv4 or IPv6). Read from `/proc`; binds nothing.
pub fn held_by(pid: u32, proto: Proto, port: u16) -> bool {
    let inodes = socket_inodes(pid);
    !inodes.is_empty()
        && proto
            .tables()
            .iter()
            .flat_map(|t| sockets(t))
            .any(|(p, inode)| p == port && inodes.contains(&inode))
}

/// The local ports of process `pid`'s own `proto` sockets. Read from
/// `/proc`; binds nothing.
pub fn ports_of(pid: u32, proto: Proto) -> Vec<u16> {
    let inodes = socket_inodes(pid);
    let mut v: Vec<u16> = proto
        .tables()
        .iter()
        .flat_map(|t| sockets(t))
        .filter(|(_, inode)| inodes.contains(inode))
        .map(|(p, _)| p)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Whether any socket at all (UDP or TCP, any state) is on local `port`.
fn in_use(port: u16) -> bool {
    ["udp", "udp6", "tcp", "tcp6"].iter().flat_map(|t| sockets(t)).any(|(p, _)| p == port)
}

/// Port ranges outside the kernel's ephemeral range, at or above [`FLOOR`].
fn ranges() -> Vec<(u16, u16)> {
    let eph = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    let mut v = Vec::new();
    if eph.0 > FLOOR {
        v.push((FLOOR, eph.0 - 1));
    }
    if eph.1 < u16::MAX {
        v.push((eph.1.max(FLOOR - 1) + 1, u16::MAX));
    }
    if v.is_empty() {
        // The ephemeral range covers everything: still random, and a
        // collision still just costs a retry.
        v.push((FLOOR, u16::MAX));
    }
    v
}

fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    h.write_u128(now.map(|d| d.as_nanos()).unwrap_or(0));
    h.finish()
}

/// A port for a child process to bind, chosen without binding it (see the
/// module docs): random, outside the ephemeral range, not in use now, never
/// handed out before by this process.
pub fn candidate() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let ranges = ranges();
    let total: u64 = ranges.iter().map(|(lo, hi)| u64::from(hi - lo) + 1).sum();
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let mut i = random() % total;
        let mut port = 0;
        for (lo, hi) in &ranges {
            let len = u64::from(hi - lo) + 1;
            if i < len {
                port = lo + i as u16;
                break;
            }
            i -= len;
        }
        if given.contains(&port) || in_use(port) {
            continue;
        }
        given.insert(port);
        return port;
    }
    panic!("no candidate port free in {ranges:?}");
}

/// A UDP socket of this process on 127.0.0.1 at a [`candidate`] port, for a
/// port that a child takes over afterwards (see [`super::Phone::start_announced`]).
pub fn bind_udp_candidate() -> UdpSocket {
    let mut errors = Vec::new();
    for _ in 0..ATTEMPTS {
        let port = candidate();
        match UdpSocket::bind(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) => errors.push(format!("{port}: {e}")),
        }
    }
    panic!("no candidate UDP port could be bound: {errors:?}");
}

/// A UDP socket on 127.0.0.1 for an in-process peer (a raw-socket phone, a
/// DNS server, a test client). Port 0: the kernel's choice, held by this
/// socket from bind to drop, so nothing else can take it meanwhile.
pub fn udp_peer() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

/// A child's stdout and stderr, drained in the background (a full pipe never
/// stalls it) and readable at any time.
struct Captured {
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    eof: Receiver<()>,
    open: usize,
}

impl Captured {
    fn of(child: &mut Child) -> Captured {
        let (tx, eof) = channel();
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            let buf = Arc::new(Mutex::new(Vec::new()));
            if let Some(mut pipe) = pipe {
                let (buf, tx) = (buf.clone(), tx.clone());
                std::thread::spawn(move || {
                    let mut chunk = [0u8; 4096];
                    while let Ok(n) = pipe.read(&mut chunk) {
                        if n == 0 {
                            break;
                        }
                        buf.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .extend_from_slice(&chunk[..n]);
                    }
                    let _ = tx.send(());
                });
            }
            buf
        };
        let out = child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>);
        let err = child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>);
        let open = usize::from(out.is_some()) + usize::from(err.is_some());
        let stdout = drain(out);
        let stderr = drain(err);
        Captured { stdout, stderr, eof, open }
    }

    /// Waits (bounded) until both pipes reached end-of-file.
    fn settle(&mut self) {
        let deadline = Instant::now() + SETTLE;
        while self.open > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.eof.recv_timeout(left).is_err() {
                return;
            }
            self.open -= 1;
        }
    }

    fn text(buf: &Mutex<Vec<u8>>) -> String {
        String::from_utf8_lossy(&buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// A child process started on a port; killed (by its PID) and reaped when
/// dropped.
pub struct PortChild {
    child: Child,
    /// The port it holds (observed, not assumed).
    pub port: u16,
    what: String,
    out: Captured,
    status: Option<ExitStatus>,
}

impl PortChild {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, once it has exited.
    pub fn status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
            if self.status.is_some() {
                self.out.settle();
            }
        }
        self.status
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.status() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        Captured::text(&self.out.stderr)
    }

    /// Its stderr and stdout so far, labelled, for a panic message.
    pub fn output(&self) -> String {
        format!(
            "{} (pid {}, port {}):\n--- stderr ---\n{}\n--- stdout ---\n{}",
            self.what,
            self.child.id(),
            self.port,
            self.stderr(),
            Captured::text(&self.out.stdout)
        )
    }
}

impl Drop for PortChild {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether a child's exit says it could not bind its port (SIPp exits 254,
/// EXIT_BIND_ERROR, and says "Unable to bind ...").
fn could_not_bind(st: ExitStatus, output: &str) -> bool {
    !st.success()
        && (st.code() == Some(254)
            || output.contains("Unable to bind")
            || output.contains("Address already in use"))
}

/// Spawns `command`, which must make the child bind `proto` port `port`, and
/// waits (bounded by [`READY_WITHIN`]) until the child holds that port or
/// exits. `Err` (with the child's output) when it exited because it could
/// not bind; otherwise the child, bound, or already exited for another
/// reason ([`PortChild::status`] says; a short run can end between two
/// polls). Panics, with the child's output, if it neither binds nor exits in
/// time.
pub fn spawn_on(
    what: &str,
    proto: Proto,
    port: u16,
    mut command: Command,
) -> Result<PortChild, String> {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e} (SIPp: apt-get install sip-tester)"));
    let out = Captured::of(&mut child);
    let mut pc = PortChild { child, port, what: what.to_owned(), out, status: None };
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if held_by(pc.pid(), proto, port) {
            return Ok(pc);
        }
        if let Some(st) = pc.status() {
            let output = pc.output();
            return if could_not_bind(st, &output) {
                Err(format!("{st}: {output}"))
            } else {
                Ok(pc)
            };
        }
        if Instant::now() >= deadline {
            let _ = pc.child.kill();
            let _ = pc.wait_for(SETTLE);
            panic!(
                "{what}: no {proto:?} socket on port {port} within {READY_WITHIN:?} \
                 (observed in /proc/PID/fd and /proc/net: Linux only)\n{}",
                pc.output()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// [`spawn_on`] on ports from `ports` until the child binds one: at most
/// [`ATTEMPTS`] starts, then a panic with every attempt's output.
pub fn spawn_on_ports(
    what: &str,
    proto: Proto,
    mut ports: impl FnMut() -> u16,
    mut command: impl FnMut(u16) -> Command,
) -> PortChild {
    let mut lost = Vec::new();
    for _ in 0..ATTEMPTS {
        let port = ports();
        match spawn_on(what, proto, port, command(port)) {
            Ok(pc) => return pc,
            Err(output) => lost.push(format!("port {port}: {output}")),
        }
    }
    panic!("{what}: could not bind a port in {ATTEMPTS} attempts:\n{}", lost.join("\n"));
}

/// [`spawn_on_ports`] on [`candidate`] ports: `command(port)` must make the
/// child bind `port`.
pub fn spawn_on_free_port(
    what: &str,
    proto: Proto,
    command: impl FnMut(u16) -> Command,
) -> PortChild {
    spawn_on_ports(what, proto, candidate, command)
}
