//! Phones register: SIPp with digest auth over UDP and TCP, refresh and
//! unregister, 1,000 extensions that survive `kill -9`, and answers that do
//! not tell unknown users from wrong passwords.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const CUSTOMER: &str = "5e4a0680-804e-11ec-8477-2fea5968d85b";

/// Accounts TOML: domain `test` with `names`, password `pw-<name>`.
fn accounts(names: &[String]) -> String {
    let mut t = format!(
        "[registrar]\nalgorithms = [\"MD5\", \"SHA-256\"]\n[[customers]]\nid = \"{CUSTOMER}\"\nname = \"t\"\n[[domains]]\nname = \"test\"\ncustomer_id = \"{CUSTOMER}\"\n"
    );
    for n in names {
        t.push_str(&format!(
            "[[extensions]]\nname = \"{n}\"\ndomain = \"test\"\npassword = \"pw-{n}\"\n"
        ));
    }
    t
}

fn users_csv(dir: &std::path::Path, file: &str, names: &[String]) -> String {
    let mut csv = String::from("SEQUENTIAL\n");
    for n in names {
        csv.push_str(&format!("{n};test;[authentication username={n} password=pw-{n}]\n"));
    }
    let p = dir.join(file);
    std::fs::write(&p, csv).expect("csv");
    p.to_string_lossy().into_owned()
}

fn sipp_args(
    scenario_file: &str,
    csv: &str,
    target: SocketAddr,
    transport: &str,
    calls: usize,
) -> Vec<String> {
    let calls = calls.to_string();
    let target = target.to_string();
    [
        "-sf",
        &scenario(scenario_file),
        "-inf",
        csv,
        &target,
        "-m",
        &calls,
        "-r",
        "500",
        "-l",
        "200",
        "-t",
        transport,
        "-i",
        "127.0.0.1",
        "-timeout",
        "60s",
        "-timeout_error",
        "-nostdin",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn sipp_register_over_udp_and_tcp_then_cycle() {
    // Separate users for the two scenarios: the cycle checks that its own
    // binding is gone, which other bindings of the same user would hide.
    let reg: Vec<String> = (1..=3).map(|i| format!("r{i}")).collect();
    let cyc: Vec<String> = (1..=3).map(|i| format!("c{i}")).collect();
    let server = Server::start_with(&accounts(&[reg.clone(), cyc.clone()].concat()));
    let reg_csv = users_csv(server.dir.path(), "reg.csv", &reg);
    let cyc_csv = users_csv(server.dir.path(), "cyc.csv", &cyc);
    for (t, addr) in [("u1", server.udp), ("t1", server.tcp)] {
        let (st, err) =
            sipp(server.dir.path(), &sipp_args("register.xml", &reg_csv, addr, t, 3), WAIT * 3);
        assert!(st.success(), "register over {t}: {st:?} {err}");
        let (st, err) = sipp(
            server.dir.path(),
            &sipp_args("register_cycle.xml", &cyc_csv, addr, t, 3),
            WAIT * 3,
        );
        assert!(st.success(), "register cycle over {t}: {st:?} {err}");
    }
}

#[test]
fn thousand_extensions_survive_kill9() {
    let names: Vec<String> = (0..1000).map(|i| format!("u{i:04}")).collect();
    let mut server = Server::start_with(&accounts(&names));
    let csv = users_csv(server.dir.path(), "users.csv", &names);
    let (st, err) =
        sipp(server.dir.path(), &sipp_args("register.xml", &csv, server.udp, "u1", 1000), WAIT * 6);
    assert!(st.success(), "{st:?} {err}");
    // Writes are queued off the hot path; wait until the database holds them
    // all (observed, not assumed), then pull the plug.
    let db = common::db(&server);
    let deadline = Instant::now() + WAIT;
    loop {
        let now = records::Timestamp::from_system(std::time::SystemTime::now());
        let n = db.load_bindings(now).expect("read").len();
        if n == 1000 {
            break;
        }
        assert!(Instant::now() < deadline, "only {n} bindings durable");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(db);
    server.kill9_and_restart();
    assert_eq!(server.loaded["bindings"], 1000, "{:?}", server.loaded);
    // The restarted server knows where u0500 is: a REGISTER without Contact
    // (a query) lists the binding SIPp made.
    let c = udp_client();
    let resp = register_as(&c, server.udp, "u0500", "pw-u0500", false);
    assert!(resp.starts_with("SIP/2.0 200"), "{resp}");
    assert!(resp.contains("Contact: <sip:u0500@127.0.0.1:"), "{resp}");
}

#[test]
fn unknown_user_and_wrong_password_get_the_same_answer() {
    let names = vec!["alice".to_owned()];
    let server = Server::start_with(&accounts(&names));
    let c = udp_client();
    let ok = register_as(&c, server.udp, "alice", "pw-alice", true);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert!(ok.contains("expires=600"), "{ok}");
    let wrong = register_as(&c, server.udp, "alice", "nope", true);
    let unknown = register_as(&c, server.udp, "mallory", "nope", true);
    let first_line = |s: &str| s.lines().next().unwrap_or("").to_owned();
    assert!(wrong.starts_with("SIP/2.0 403"), "{wrong}");
    assert_eq!(first_line(&wrong), first_line(&unknown));
}

#[test]
fn udp_bindings_get_keepalive_options() {
    let names = vec!["nat".to_owned()];
    let cfg =
        accounts(&names).replacen("[registrar]\n", "[registrar]\nkeepalive_interval_secs = 1\n", 1);
    let server = Server::start_with(&cfg);
    let c = udp_client();
    let ok = register_as(&c, server.udp, "nat", "pw-nat", true);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    // Within a few intervals an OPTIONS arrives at the phone's NAT address.
    c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let ping = String::from_utf8_lossy(&recv(&c)).into_owned();
    assert!(ping.starts_with("OPTIONS sip:127.0.0.1:"), "{ping}");
}
