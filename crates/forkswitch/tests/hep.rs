//! HEP v3 (`[hep]`) of the real binary to a real receiver: Debian's
//! Kamailio with its `sipcapture` module decapsulates every packet and runs
//! each SIP message through its script, which logs the source and
//! destination HEP gave it, the Call-ID and an MD5 of the message; and
//! tshark captures the HEP packets on the loopback, whose chunks (times,
//! capture id, password, correlation id) the test reads. Every message of a
//! SIPp ring group call, as the switch's own call trace lists it, must
//! arrive, with the right source, destination, time and payload, every leg
//! correlated to the caller's Call-ID. And a collector that is down costs a
//! call nothing.
//!
//! Each test runs in a network namespace of its own (HEP's port is then
//! fixed, and tshark sees only this test's packets).

mod common;

use common::fork::{ring_group_call, KEY};
use common::http::Api;
use common::*;
use md5::Digest;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HEP_PORT: u16 = 9060;

/// Kamailio as a HEP receiver: every SIP message it decapsulates is one
/// log line `HEP src=.. ci=.. md5=..` (Kamailio 5.6 gives the script
/// HEP's source, not its destination: `$Rp` is the source port again; the
/// destination is checked in the captured packets).
fn kamailio_cfg(dir: &std::path::Path) -> String {
    format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
children=1
disable_tcp=yes
listen=udp:127.0.0.1:{HEP_PORT}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "db_text.so"
loadmodule "sipcapture.so"
modparam("sipcapture", "hep_capture_on", 1)
modparam("sipcapture", "insert_retry_timeout", 0)
modparam("sipcapture", "db_url", "text://{}")
request_route {{
    xlog("L_ERR", "HEP src=$si:$sp ci=$ci md5=$(mb{{s.md5}})\n");
    drop;
}}
onreply_route {{
    xlog("L_ERR", "HEP src=$si:$sp ci=$ci md5=$(mb{{s.md5}})\n");
    drop;
}}
"#,
        dir.display()
    )
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The chunks of one HEP v3 packet, by type.
fn hep_chunks(p: &[u8]) -> BTreeMap<u16, Vec<u8>> {
    assert_eq!(&p[..4], b"HEP3", "{p:?}");
    assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])), p.len());
    let mut out = BTreeMap::new();
    let mut at = 6;
    while at + 6 <= p.len() {
        let kind = u16::from_be_bytes([p[at + 2], p[at + 3]]);
        let len = usize::from(u16::from_be_bytes([p[at + 4], p[at + 5]]));
        out.insert(kind, p[at + 6..at + len].to_vec());
        at += len;
    }
    out
}

fn u32_of(v: &[u8]) -> u32 {
    u32::from_be_bytes(v.try_into().expect("4 bytes"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex")).collect()
}

#[test]
fn every_message_of_a_call_reaches_kamailio_sipcapture() {
    netns::enter();
    let dir = tempfile::tempdir().expect("dir");
    let pcap = dir.path().join("hep.pcap");
    let tshark = Command::new("tshark")
        .args(["-n", "-i", "lo", "-f", &format!("udp dst port {HEP_PORT}"), "-w"])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tshark (Debian; tests/peers.sh installs it)");
    let mut tshark = Killed(tshark);
    // dumpcap says so once it captures.
    let mut err = tshark.0.stderr.take().expect("stderr");
    let (tx, capturing) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 512];
        let mut seen = String::new();
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if seen.contains("Capturing on") {
                let _ = tx.send(());
            }
        }
    });
    capturing.recv_timeout(WAIT).expect("tshark did not start capturing");

    std::fs::write(dir.path().join("k.cfg"), kamailio_cfg(dir.path())).expect("cfg");
    let log = std::fs::File::create(dir.path().join("kamailio.log")).expect("log");
    let kamailio = Command::new("kamailio")
        .args(["-f", "k.cfg", "-DD", "-E", "-w", "."])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("kamailio (Debian)");
    let kamailio = Killed(kamailio);
    let kpid = kamailio.0.id();
    wait_until("kamailio on the HEP port", || ports::held_by(kpid, ports::Proto::Udp, HEP_PORT));

    let hep = format!(
        "[hep]\naddress = \"127.0.0.1:{HEP_PORT}\"\ncapture_id = 2042\npassword = \"hep-secret\"\n"
    );
    let server = ring_group_call(&hep);
    let (root, _legs) = finished_groupcall(&server);
    let api = Api::new(server.http, KEY);
    let want = api.get_ok(&format!("/v1.0/groupcalls/{}/messages", root.id))["result"]
        .as_array()
        .expect("result")
        .clone();
    assert!(want.len() >= 15, "{} messages", want.len());
    let inbound = db(&server).call(root.master_call_id).expect("read").expect("call");

    // Kamailio received and parsed every one, from the right address, byte
    // for byte.
    let lines = || {
        let text = std::fs::read_to_string(dir.path().join("kamailio.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split_once("HEP src=").map(|(_, r)| r.to_owned()))
            .collect::<Vec<_>>()
    };
    wait_until("kamailio to log every message", || lines().len() >= want.len());
    let got = lines();
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for m in &want {
        let text = m["message"].as_str().expect("message");
        let line = format!(
            "{} ci={} md5={}",
            m["src"].as_str().expect("src"),
            m["call_id"].as_str().expect("call_id"),
            hex(&md5::Md5::digest(text.as_bytes()))
        );
        assert!(got.contains(&line), "kamailio did not log {line}\nit logged {got:#?}");
    }

    // The packets themselves, as captured on the loopback: time to the
    // microsecond, agent id, password, and the caller's Call-ID as the
    // correlation id of every leg.
    // dumpcap writes the file in its own time: read it until it holds them.
    let read = || -> Vec<String> {
        let out = Command::new("tshark")
            .args(["-n", "-r"])
            .arg(&pcap)
            .args(["-d", &format!("udp.port=={HEP_PORT},data"), "-T", "fields", "-e", "data.data"])
            .output()
            .expect("tshark -r");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    };
    wait_until("tshark to write every HEP packet", || read().len() >= want.len());
    let _ = Command::new("kill").args(["-INT", &tshark.0.id().to_string()]).status();
    let _ = tshark.0.wait();
    let packets: Vec<BTreeMap<u16, Vec<u8>>> =
        read().iter().map(|l| hep_chunks(&unhex(l.trim()))).collect();
    assert_eq!(packets.len(), want.len());
    for (p, m) in packets.iter().zip(&want) {
        assert_eq!(p[&15], m["message"].as_str().expect("message").as_bytes());
        let addr = |ip: u16, port: u16| {
            let ip: [u8; 4] = p[&ip].clone().try_into().expect("IPv4");
            let port = u16::from_be_bytes(p[&port].clone().try_into().expect("port"));
            std::net::SocketAddr::from((ip, port)).to_string()
        };
        assert_eq!(addr(3, 7), m["src"].as_str().expect("src"));
        assert_eq!(addr(4, 8), m["dst"].as_str().expect("dst"));
        let micros = i64::from(u32_of(&p[&9])) * 1_000_000 + i64::from(u32_of(&p[&10]));
        assert_eq!(
            records::Timestamp::from_micros(micros).to_string(),
            m["time"].as_str().expect("time")
        );
        assert_eq!(u32_of(&p[&12]), 2042);
        assert_eq!(p[&14], b"hep-secret");
        assert_eq!(p[&11], [1], "SIP");
        assert_eq!(p[&17], inbound.sip_call_id.as_bytes(), "correlation of {}", m["call_id"]);
    }
}

#[test]
fn a_collector_that_is_down_costs_calls_nothing() {
    netns::enter();
    // Nothing listens on the HEP port: TCP connects are refused, every
    // packet is dropped by the HEP thread, the call goes on.
    let hep = format!("[hep]\naddress = \"127.0.0.1:{HEP_PORT}\"\ntransport = \"tcp\"\n");
    let started = Instant::now();
    let server = ring_group_call(&hep);
    let (root, _) = finished_groupcall(&server);
    assert_ne!(root.answer_call_id, records::NIL);
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    let api = Api::new(server.http, KEY);
    let all: Vec<Value> = api.get_ok(&format!("/v1.0/groupcalls/{}/messages", root.id))["result"]
        .as_array()
        .expect("result")
        .clone();
    assert!(all.len() >= 15, "the trace store still has the call: {}", all.len());
}
