//! # rtpengine-harness: a real rtpengine for tests
//!
//! [`Rtpengine::start`] runs the Debian `rtpengine` daemon in userspace
//! (`--table=-1`, no kernel module) on loopback: its ng control port and
//! its media port range are picked free at run time (and the ng socket is
//! checked to be the started process's own, in `/proc`: parallel tests
//! never talk to each other's daemon), deleted calls go at
//! once (`--delete-delay=0`, so `list` is empty right after a call), and
//! it is killed by its PID when the handle drops. [`NgDriver`] drives one
//! or more of them with `media-anchor`'s sans-IO [`NgClient`] through a
//! blocking UDP loop: the smallest shell there is, for tests.
//!
//! For the media crate's tests and forkswitch's integration tests alike
//! (`[dev-dependencies] rtpengine-harness = { path = "../rtpengine-harness" }`).
//! `bash tests/peers.sh` installs `rtpengine-daemon` when it is missing.

use media_anchor::{
    CallStats, ClientEvent, Command, Failure, InstanceId, InstanceSpec, NgClient, Reply, ReplyBody,
    RequestToken, RtpengineSettings,
};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Media ports each rtpengine gets (even count: RTP/RTCP pairs).
const PORTS_PER_INSTANCE: u16 = 100;
/// Where media port ranges are taken from (below Linux's ephemeral range).
const MEDIA_PORTS: std::ops::Range<u16> = 20_000..32_000;
/// How long a start may take before it is a failure.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How many ng ports a start tries when another process took the port.
const START_ATTEMPTS: u32 = 8;

static STARTED: AtomicU32 = AtomicU32::new(0);
/// Drivers made by this process, for distinct seeds (hence cookies).
static DRIVERS: AtomicU64 = AtomicU64::new(0);

/// `true` when process `pid` has a socket bound to UDP `port` on
/// 127.0.0.1: the inode of that socket in `/proc/<pid>/net/udp` (the table
/// of the process's own network namespace, which may be a test's private
/// one) is one of the process's file descriptors.
pub fn holds_udp_port(pid: u32, port: u16) -> io::Result<bool> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/udp"))?;
    let local = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.get(1) == Some(&local.as_str())).then(|| cols.get(9).map(|i| i.to_string()))?
        })
        .collect();
    if inodes.is_empty() {
        return Ok(false);
    }
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(link) = std::fs::read_link(fd?.path()) else { continue };
        let link = link.to_string_lossy().into_owned();
        if inodes.iter().any(|i| link == format!("socket:[{i}]")) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A running rtpengine, killed (by PID) when dropped.
pub struct Rtpengine {
    child: Child,
    ng: SocketAddr,
    ports: (u16, u16),
    log: PathBuf,
    dir: PathBuf,
}

/// A free UDP port on 127.0.0.1 (bound then released).
pub fn free_udp_port() -> io::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `count` consecutive free UDP ports on 127.0.0.1 in [`MEDIA_PORTS`],
/// starting from a slot that depends on the process and a counter (so
/// that parallel tests and test binaries seldom try the same one).
fn free_port_range(count: u16) -> io::Result<(u16, u16)> {
    let slots = (MEDIA_PORTS.end - MEDIA_PORTS.start) / count;
    let first = std::process::id()
        .wrapping_mul(131)
        .wrapping_add(STARTED.fetch_add(1, Ordering::Relaxed) * 17);
    for k in 0..u32::from(slots) {
        let slot = ((first + k) % u32::from(slots)) as u16;
        let lo = MEDIA_PORTS.start + slot * count;
        let hi = lo + count - 1;
        let all_free = (lo..=hi).all(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return Ok((lo, hi));
        }
    }
    Err(io::Error::new(io::ErrorKind::AddrInUse, "no free media port range"))
}

impl Rtpengine {
    /// Starts rtpengine and waits until it answers `ping` on an ng port
    /// that its own process holds (see [`Rtpengine::start_once`]).
    pub fn start() -> io::Result<Rtpengine> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Rtpengine::start_once() {
                Ok(r) => return Ok(r),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("rtpengine did not start")))
    }

    /// One try: a port that was free a moment ago may be taken by another
    /// test's rtpengine before ours binds it. Then ours exits (or a `pong`
    /// comes from the other one): `AddrInUse`, and [`Rtpengine::start`]
    /// tries another port. Success means that the ng socket on our port
    /// is one of *our* process's file descriptors.
    fn start_once() -> io::Result<Rtpengine> {
        let ng = SocketAddr::from(([127, 0, 0, 1], free_udp_port()?));
        let ports = free_port_range(PORTS_PER_INSTANCE)?;
        let dir =
            std::env::temp_dir().join(format!("rtpengine-{}-{}", std::process::id(), ng.port()));
        std::fs::create_dir_all(&dir)?;
        let log = dir.join("rtpengine.log");
        let child = Process::new("rtpengine")
            .args([
                "--config-file=none",
                "--table=-1",
                "--interface=127.0.0.1",
                &format!("--listen-ng={ng}"),
                &format!("--port-min={}", ports.0),
                &format!("--port-max={}", ports.1),
                "--delete-delay=0",
                "--log-level=6",
                "-f",
                "-E",
            ])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout.log"))?)
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot run rtpengine ({e}): bash tests/peers.sh installs it"),
                )
            })?;
        let mut r = Rtpengine { child, ng, ports, log, dir };
        r.wait_ready()?;
        Ok(r)
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut driver = NgDriver::new(&[self.ng])?;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let kind = if log.contains("in use") || log.contains("listen") {
                    io::ErrorKind::AddrInUse
                } else {
                    io::ErrorKind::Other
                };
                return Err(io::Error::new(kind, format!("rtpengine exited ({status}): {log}")));
            }
            let pong = driver.request_to(InstanceId(0), Command::Ping);
            if let Ok(Reply::Ok { body: ReplyBody::Pong, .. }) = pong {
                if holds_udp_port(self.child.id(), self.ng.port())? {
                    return Ok(());
                }
                // Another rtpengine answered on our port: ours lost the race.
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("ng port {} is another process's", self.ng.port()),
                ));
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "rtpengine did not answer ping"))
    }

    /// Its ng control address.
    pub fn ng_addr(&self) -> SocketAddr {
        self.ng
    }

    /// Its media port range (inclusive).
    pub fn ports(&self) -> (u16, u16) {
        self.ports
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The directory of its logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills it now (SIGKILL to its PID) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Rtpengine {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `n` RTP packets (PCMU-sized) from `from` to 127.0.0.1:`port`;
/// returns how many `to` received unchanged, each within 500 ms.
pub fn relay_rtp(from: &UdpSocket, port: u16, to: &UdpSocket, n: u16) -> u16 {
    let _ = to.set_read_timeout(Some(Duration::from_millis(500)));
    let mut got = 0;
    let mut buf = [0u8; 2048];
    for seq in 0..n {
        let mut pkt = vec![0x80, 0x00];
        pkt.extend_from_slice(&seq.to_be_bytes());
        pkt.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        pkt.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        pkt.extend(std::iter::repeat_n(0xff, 160));
        if from.send_to(&pkt, SocketAddr::from(([127, 0, 0, 1], port))).is_err() {
            continue;
        }
        if let Ok((len, _)) = to.recv_from(&mut buf) {
            assert_eq!(len, pkt.len(), "relayed unchanged");
            got += 1;
        }
    }
    got
}

/// The `m=audio` port of an SDP (0 without one).
pub fn audio_port(sdp: &str) -> u16 {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// `media-anchor`'s client over a real UDP socket, one request at a time.
pub struct NgDriver {
    socket: UdpSocket,
    client: NgClient,
    next_token: u64,
    /// Every event that was not the reply waited for (instance up/down,
    /// dropped datagrams, health pings), in order.
    pub events: Vec<ClientEvent>,
}

impl NgDriver {
    /// A driver for these ng addresses (weight 1 each), with a 300 ms
    /// timeout and 2 retries.
    pub fn new(addrs: &[SocketAddr]) -> io::Result<NgDriver> {
        let mut s = RtpengineSettings::new(
            addrs.iter().map(|&addr| InstanceSpec { addr, weight: 1 }).collect(),
        );
        s.timeout = Duration::from_millis(300);
        s.retries = 2;
        s.probe_interval = Duration::from_millis(500);
        // Distinct per driver and per process: no two drivers share cookies.
        let n = DRIVERS.fetch_add(1, Ordering::Relaxed);
        let seed = (u64::from(std::process::id()) << 32) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        NgDriver::with_settings(&s, seed)
    }

    /// A driver with these settings; its cookies and choices of instance
    /// come from `seed`.
    pub fn with_settings(s: &RtpengineSettings, seed: u64) -> io::Result<NgDriver> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        let client = NgClient::new(s, seed, Instant::now());
        let mut d = NgDriver { socket, client, next_token: 0, events: Vec::new() };
        d.flush()?;
        Ok(d)
    }

    /// The client, for its getters.
    pub fn client(&self) -> &NgClient {
        &self.client
    }

    fn flush(&mut self) -> io::Result<()> {
        while let Some(t) = self.client.poll_transmit() {
            // A refused send (nothing listening) is a lost datagram to ng.
            let _ = self.socket.send_to(&t.bytes, t.to);
        }
        Ok(())
    }

    /// Sends `command` routed by its call; waits for its outcome.
    pub fn request(&mut self, command: Command) -> Result<Reply, Failure> {
        let token = self.token();
        self.client.send(Instant::now(), token, command);
        self.wait(token)
    }

    /// Sends `command` to one instance; waits for its outcome.
    pub fn request_to(&mut self, instance: InstanceId, command: Command) -> Result<Reply, Failure> {
        let token = self.token();
        self.client.send_to(Instant::now(), token, instance, command);
        self.wait(token)
    }

    /// The Call-IDs instance `instance` holds (up to 1000).
    pub fn list(&mut self, instance: InstanceId) -> Vec<String> {
        match self.request_to(instance, Command::List { limit: Some(1000) }) {
            Ok(Reply::Ok { body: ReplyBody::Calls(c), .. }) => c,
            other => panic!("list: {other:?}"),
        }
    }

    /// A call's statistics (panics on anything else).
    pub fn query(&mut self, call_id: &str) -> CallStats {
        let q = media_anchor::Query { call_id: call_id.into(), from_tag: None, to_tag: None };
        match self.request(Command::Query(q)) {
            Ok(Reply::Ok { body: ReplyBody::Stats(s), .. }) => *s,
            other => panic!("query {call_id}: {other:?}"),
        }
    }

    fn token(&mut self) -> RequestToken {
        self.next_token += 1;
        RequestToken(self.next_token)
    }

    /// Runs the loop until `token`'s request is done.
    fn wait(&mut self, token: RequestToken) -> Result<Reply, Failure> {
        let mut buf = vec![0u8; 65_536];
        loop {
            let _ = self.flush();
            while let Some(e) = self.client.poll_event() {
                match e {
                    ClientEvent::Done(d) if d.token == Some(token) => return d.outcome,
                    other => self.events.push(other),
                }
            }
            let now = Instant::now();
            let wait = match self.client.poll_timeout() {
                Some(at) if at <= now => {
                    self.client.handle_timeout(now);
                    continue;
                }
                Some(at) => at - now,
                None => Duration::from_secs(1),
            };
            let _ = self.socket.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => self.client.handle_datagram(Instant::now(), from, &buf[..n]),
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    self.client.handle_timeout(Instant::now());
                }
                // ICMP port unreachable from a dead instance: a loss.
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_held_by_the_process_that_bound_it_only() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        assert!(holds_udp_port(std::process::id(), port).unwrap());
        // PID 1 (init) never binds a test's ephemeral port.
        assert!(!holds_udp_port(1, port).unwrap_or(false));
        drop(s);
        assert!(!holds_udp_port(std::process::id(), port).unwrap());
    }
}
