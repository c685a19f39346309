//! The Debian package, for real: `cargo deb --no-build` packs
//! `target/debian/forkswitch_<ver>_amd64.deb` around the release binary of
//! `cargo build --release -p forkswitch` (the one the benches use: one
//! release build serves both), the package is
//! installed with `dpkg -i` on this machine, `systemd-analyze verify` checks
//! its unit, the unit's `ExecStart` line runs as the unit's `User` in its
//! `WorkingDirectory`, a phone registers and the binding lands in the
//! database under `/var/lib/forkswitch`, and `dpkg --purge` leaves nothing
//! behind (binary, config, state directory, system user).
//!
//! It changes the machine (a package, a system user), so it holds an
//! exclusive lock on `/tmp/forkswitch-package.lock` while it runs, and runs
//! the server in a network namespace of its own (the packaged config's
//! fixed ports 5060 and 8080 stay private). Needs root, `cargo deb`
//! (crates.io cargo-deb, installed by `tests/peers.sh`), dpkg and
//! systemd-analyze.

mod common;

use common::http::Api;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where the unit is installed, as the package lists it.
const UNIT_SUFFIX: &str = "systemd/system/forkswitch.service";

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An exclusive lock held until dropped (dpkg state is machine-wide).
struct MachineLock {
    _held: std::fs::File,
}

impl MachineLock {
    fn take() -> MachineLock {
        let f = std::fs::File::create("/tmp/forkswitch-package.lock").expect("lock file");
        // SAFETY: flock on a descriptor we own; released when it closes.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(r, 0, "flock: {}", std::io::Error::last_os_error());
        MachineLock { _held: f }
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo_root().join("target"))
}

/// A `cargo` command that sees the environment a user's shell would: not
/// the one `cargo test` gives this test (its `CARGO_*` package variables
/// and library path), which made the nested build recompile the binary.
fn cargo(args: &[&str]) -> Command {
    let mut c = Command::new("cargo");
    c.args(args).current_dir(common::repo_root()).env_remove("LD_LIBRARY_PATH");
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR" {
            c.env_remove(k);
        }
    }
    c
}

/// The package of the release binary: `cargo build --release -p
/// forkswitch` (the README's and the benches' build: a no-op when it is up
/// to date, so one release build serves all), then `cargo deb --no-build`.
/// Returns the package's path.
fn build_package() -> PathBuf {
    let version = cargo(&["deb", "--version"]).output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "`cargo deb` is missing: run tests/peers.sh (it installs crates.io cargo-deb, pinned)"
    );
    let started = Instant::now();
    run(&mut cargo(&["build", "--release", "-p", "forkswitch"]));
    eprintln!("release build: {:.0} s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    run(&mut cargo(&["deb", "-p", "forkswitch", "--no-build"]));
    eprintln!("cargo deb: {:.1} s", started.elapsed().as_secs_f64());
    let deb = target_dir()
        .join("debian")
        .join(format!("forkswitch_{}_amd64.deb", env!("CARGO_PKG_VERSION")));
    assert!(deb.is_file(), "cargo deb did not write {}", deb.display());
    deb
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "forkswitch"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("installed"))
}

fn user_exists(name: &str) -> bool {
    Command::new("getent").args(["passwd", name]).status().is_ok_and(|s| s.success())
}

/// What the package holds: the binary, the config as a conffile, the unit
/// (its installed path is returned).
fn check_contents(deb: &Path) -> String {
    let files = text(&run(Command::new("dpkg-deb").arg("-c").arg(deb)));
    // dpkg-deb lists paths with or without a leading "./".
    for f in ["usr/bin/forkswitch", "etc/forkswitch/forkswitch.toml"] {
        assert!(files.lines().any(|l| l.ends_with(f)), "{f} is not in the package:\n{files}");
    }
    let unit = files
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .find(|p| p.ends_with(UNIT_SUFFIX))
        .unwrap_or_else(|| panic!("no forkswitch.service in the package:\n{files}"));
    let conffiles = text(&run(Command::new("dpkg-deb").arg("-I").arg(deb).arg("conffiles")));
    assert_eq!(conffiles.trim(), "/etc/forkswitch/forkswitch.toml");
    format!("/{}", unit.trim_start_matches('.').trim_start_matches('/'))
}

/// A `Key=value` of the installed unit's `[Service]` section.
fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the unit has no {key}=\n{unit}"))
        .trim()
        .to_owned()
}

/// Checks the installed unit at `path`: verify passes, sandboxing is on.
fn check_unit(path: &str) -> String {
    let unit = std::fs::read_to_string(path).expect("the package installs its unit");
    let verify = Command::new("systemd-analyze").args(["verify", path]).output().expect("verify");
    let said = String::from_utf8_lossy(&verify.stderr).into_owned();
    assert!(verify.status.success(), "systemd-analyze verify failed:\n{said}");
    assert!(!said.contains("forkswitch.service"), "systemd-analyze verify warns:\n{said}");
    for (key, value) in [
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("StateDirectory", "forkswitch"),
        ("User", "forkswitch"),
        // The packaged config's ports (5060, 8080) need no capability.
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
    ] {
        assert_eq!(unit_value(&unit, key), value, "{key}");
    }
    unit
}

/// Runs the unit's ExecStart as its User in its WorkingDirectory; returns
/// the child once it logged "forkswitch ready".
fn start_as_unit(unit: &str) -> std::process::Child {
    let exec = unit_value(unit, "ExecStart");
    let user = unit_value(unit, "User");
    let dir = unit_value(unit, "WorkingDirectory");
    let mut argv = exec.split_whitespace();
    let program = argv.next().expect("ExecStart names a program");
    let mut child = Command::new("setpriv")
        .args([&format!("--reuid={user}"), &format!("--regid={user}"), "--init-groups", "--"])
        .arg(program)
        .args(argv)
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start forkswitch as its user");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("[packaged forkswitch] {line}");
            if line.contains("forkswitch ready") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(common::WAIT).is_err() {
        let _ = child.kill();
        panic!("the packaged forkswitch did not get ready as {user} in {dir}");
    }
    child
}

fn stop(mut child: std::process::Child) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + common::WAIT;
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            assert!(st.success(), "forkswitch exited with {st}");
            return;
        }
        assert!(Instant::now() < deadline, "forkswitch did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A phone registers with the packaged defaults; the API lists it and the
/// binding is in the database under the state directory.
fn register_a_phone() {
    let sip: SocketAddr = "127.0.0.1:5060".parse().expect("addr");
    let phone = common::udp_client();
    let resp = common::register_from(&phone, sip, "test13", "test13-secret");
    assert!(resp.starts_with("SIP/2.0 200"), "{resp}");
    let api = Api::new("127.0.0.1:8080".parse().expect("addr"), "demo-api-key");
    let source = phone.local_addr().expect("addr").to_string();
    // Stored within one commit window of the REGISTER.
    api.get_until("/v1.0/registrations", "test13 listed", |regs| {
        regs["result"].as_array().is_some_and(|all| {
            all.iter().any(|r| r.to_string().contains("test13") && r.to_string().contains(&source))
        })
    });
}

fn owner_of(path: &str) -> String {
    text(&run(Command::new("stat").args(["-c", "%U:%G %a", path]))).trim().to_owned()
}

#[test]
fn deb_installs_runs_as_its_user_and_purges_cleanly() {
    common::netns::enter();
    let _lock = MachineLock::take();
    let deb = build_package();
    let unit_path = check_contents(&deb);
    if installed() {
        run(Command::new("dpkg").args(["--purge", "forkswitch"]));
    }
    run(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(user_exists("forkswitch"), "no forkswitch system user after install");
    assert_eq!(owner_of("/var/lib/forkswitch"), "forkswitch:forkswitch 750");
    assert_eq!(owner_of("/etc/forkswitch/forkswitch.toml"), "root:forkswitch 640");
    let unit = check_unit(&unit_path);

    let child = start_as_unit(&unit);
    register_a_phone();
    stop(child);
    // Written by the service's user (its mode is the umask's: systemd's
    // UMask=0027 applies under systemd only).
    let db = owner_of("/var/lib/forkswitch/forkswitch.db");
    assert!(db.starts_with("forkswitch:forkswitch "), "{db}");

    run(Command::new("dpkg").args(["--purge", "forkswitch"]));
    assert!(!installed(), "still installed after purge");
    for gone in ["/usr/bin/forkswitch", "/etc/forkswitch", "/var/lib/forkswitch", &unit_path] {
        assert!(!Path::new(gone).exists(), "{gone} is left after purge");
    }
    assert!(!user_exists("forkswitch"), "the forkswitch user is left after purge");
}
