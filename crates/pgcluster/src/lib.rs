//! # pgcluster: a throwaway PostgreSQL for tests
//!
//! [`Cluster::start`] runs Debian's PostgreSQL binaries
//! (`/usr/lib/postgresql/*/bin`, or `$PG_BIN`): `initdb` in a temporary
//! directory, then `postgres` on a free 127.0.0.1 port with its Unix socket
//! in that directory, as the `postgres` OS user when the tests run as root
//! (PostgreSQL refuses to run as root). Each test takes a database of its
//! own ([`Cluster::database`]); [`shared`] is one cluster per test binary.
//!
//! A cluster is stopped by its PID: when dropped, at process exit for the
//! shared one, and by the kernel if the test process dies (the server's
//! parent-death signal is SIGINT, PostgreSQL's fast shutdown). For tests,
//! `fsync` is off: they kill the switch, not the database.
//!
//! Never used by the switch itself.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A running (or stopped) cluster.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    owner: Option<(u32, u32)>,
    server: Mutex<Option<Child>>,
    next_db: AtomicU32,
    spawner: Spawner,
}

/// The shared cluster of this test binary, started on first use.
pub fn shared() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    SHARED.get_or_init(|| {
        let c = Cluster::start();
        extern "C" fn stop_shared() {
            if let Some(c) = SHARED.get() {
                c.stop();
                // A static is never dropped: remove its directory here.
                let _ = std::fs::remove_dir_all(c.dir.path());
            }
        }
        // SAFETY: registers a plain function with no arguments, run once
        // by exit().
        unsafe { libc::atexit(stop_shared) };
        c
    })
}

/// The directory of the newest PostgreSQL binaries installed.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run tests/peers.sh \
             (apt-get install postgresql)"
        ),
    }
}

/// uid and gid of the `postgres` user, when running as root.
fn owner() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    // SAFETY: the name is a NUL-terminated literal; the returned record is
    // read at once, before any other getpw* call on this thread.
    unsafe {
        let pw = libc::getpwnam(c"postgres".as_ptr());
        if pw.is_null() {
            panic!("running as root and there is no postgres user: install postgresql");
        }
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn as_owner(cmd: &mut Command, owner: Option<(u32, u32)>) -> &mut Command {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// Spawns the server from a thread that lives as long as the process, so
/// that the parent-death signal fires when the process dies, not when the
/// test thread that started the cluster ends.
struct Spawner {
    tx: Mutex<mpsc::Sender<(Command, mpsc::Sender<std::io::Result<Child>>)>>,
}

impl Spawner {
    fn new() -> Spawner {
        let (tx, rx) = mpsc::channel::<(Command, mpsc::Sender<std::io::Result<Child>>)>();
        std::thread::Builder::new()
            .name("pgcluster".into())
            .spawn(move || {
                while let Ok((mut cmd, done)) = rx.recv() {
                    let _ = done.send(cmd.spawn());
                }
                // Keep the thread (the children's parent) alive.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawner thread");
        Spawner { tx: Mutex::new(tx) }
    }

    fn spawn(&self, cmd: Command) -> std::io::Result<Child> {
        let (done, answer) = mpsc::channel();
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).send((cmd, done)).expect("spawner");
        answer.recv().expect("spawner answers")
    }
}

impl Cluster {
    /// initdb and start a new cluster (a few seconds).
    pub fn start() -> Cluster {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("pgcluster.").tempdir().expect("tempdir");
        let owner = owner();
        if let Some((uid, gid)) = owner {
            let path =
                std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).expect("path");
            // SAFETY: a valid NUL-terminated path.
            let rc = unsafe { libc::chown(path.as_ptr(), uid, gid) };
            assert_eq!(
                rc,
                0,
                "chown {}: {}",
                dir.path().display(),
                std::io::Error::last_os_error()
            );
        }
        let data = dir.path().join("data");
        let st = as_owner(&mut Command::new(bin.join("initdb")), owner)
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C"])
            .stdout(Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(st.success(), "initdb failed: {st}");
        let cluster = Cluster {
            dir,
            bin,
            port: free_port(),
            owner,
            server: Mutex::new(None),
            next_db: AtomicU32::new(0),
            spawner: Spawner::new(),
        };
        cluster.resume();
        cluster
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The Unix socket directory.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The TCP port (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(Child::id)
    }

    /// `postgres://postgres@127.0.0.1:PORT/NAME`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A new empty database; its URL.
    pub fn database(&self) -> String {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("test_{}_{n}", std::process::id());
        self.psql(&format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Runs one SQL command as `postgres` in database `postgres` (panics
    /// on failure); returns what psql printed (unaligned, tuples only).
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("postgres", sql)
    }

    /// [`Cluster::psql`] in database `db`.
    pub fn psql_in(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db, "-c", sql])
            .output()
            .expect("psql runs");
        assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts the server (again) on the same data, port and socket
    /// directory, and waits until it takes connections.
    pub fn resume(&self) {
        let mut server = self.server.lock().unwrap_or_else(|e| e.into_inner());
        assert!(server.is_none(), "already running");
        let mut cmd = Command::new(self.bin.join("postgres"));
        as_owner(&mut cmd, self.owner)
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.socket_dir())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "timezone=UTC"])
            .args(["-c", "max_connections=300", "-c", "shared_buffers=64MB"])
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.path().join("server.log"))
                    .map_or_else(|_| Stdio::null(), Stdio::from),
            );
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; nothing else runs here.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT);
                    Ok(())
                });
            }
        }
        let mut child = self.spawner.spawn(cmd).expect("postgres starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .arg("-q")
                .arg("-h")
                .arg(self.socket_dir())
                .args(["-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                break;
            }
            if let Ok(Some(st)) = child.try_wait() {
                let log =
                    std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
                panic!("postgres exited ({st}):\n{log}");
            }
            assert!(Instant::now() < deadline, "postgres not ready in 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        *server = Some(child);
    }

    /// Stops the server (fast shutdown: SIGINT to its PID, then SIGKILL
    /// after 10 s) and waits for it. The data stays: [`Cluster::resume`].
    pub fn stop(&self) {
        let Some(mut child) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let pid = child.id() as libc::pid_t;
        // SAFETY: signals the child we spawned, by its PID.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_serves_stops_and_resumes() {
        let c = Cluster::start();
        let url = c.database();
        let db = url.rsplit('/').next().expect("name").to_owned();
        c.psql_in(&db, "CREATE TABLE t (x int); INSERT INTO t VALUES (7)");
        let pid = c.pid().expect("running");
        c.stop();
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "stopped by PID");
        c.resume();
        assert_eq!(c.psql_in(&db, "SELECT x FROM t").trim(), "7");
    }
}
