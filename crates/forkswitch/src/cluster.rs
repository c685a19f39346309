//! The cluster thread (`[cluster]`): this node's lease in the shared
//! PostgreSQL and its view of the other nodes, handed to the switch core as
//! [`ClusterChange`] inputs. One blocking thread with a connection of its
//! own ([`store::Membership`]), never the SIP thread.
//!
//! Every heartbeat it renews the lease, reaps the nodes whose lease ran out
//! (one survivor closes their live records and marks their bindings
//! unreachable), then reads the live nodes and every stored binding and
//! sends both to the switch, and the accounts and ring groups when they
//! differ from the previous read (made by any node's API or config file).
//! Sending only what changed since the last read keeps a read taken just
//! before this node's own API change was committed from undoing it.
//!
//! A node that lost the database judges nobody for one lease after it is
//! back: every node's lease ran out on the database's clock while it was
//! away, and the others may not have renewed yet ([`Standing`]).
//!
//! Why polling and not LISTEN/NOTIFY: the thread reads the nodes each
//! heartbeat anyway (the lease needs it), and reading every binding in the
//! same round makes each round a full resync: nothing is missed across a
//! lost connection or a PostgreSQL restart, with no second mechanism for
//! catching up. A binding reaches the other nodes within one commit
//! window plus one heartbeat. The price is a read of every binding per
//! heartbeat per node: cheap at thousands, the point to add a
//! NOTIFY-driven per-AOR read at hundreds of thousands.

use crate::config::Config;
use records::Timestamp;
use std::net::SocketAddr;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant, SystemTime};
use store::Membership;
use switch::{ClusterChange, ClusterSettings, Node};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// The running cluster thread. Dropping it stops the thread.
pub struct ClusterThread {
    stop: Option<std_mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ClusterThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn wall() -> Timestamp {
    Timestamp::from_system(SystemTime::now())
}

/// This node, joined: its membership, not yet beating.
pub struct Joined {
    m: Membership,
    /// The secret offered when joining (kept by the first node ever).
    fresh: String,
    heartbeat: Duration,
    lease: Duration,
    /// The switch's cluster settings.
    pub settings: ClusterSettings,
}

/// Joins the cluster (this node's id, taken back after a restart); `None`
/// without `[cluster]`. Callable on the SIP thread's runtime: the
/// (blocking) connection is made on a thread of its own.
pub fn join(cfg: &Config) -> Result<Option<Joined>, String> {
    let (Some(c), Some(url)) = (&cfg.cluster, cfg.database.store_url()) else {
        return Ok(None);
    };
    let lease = Duration::from_millis(c.lease_ms);
    let fresh: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    let advertise = c.advertise.to_string();
    let joined = std::thread::scope(|s| {
        s.spawn(|| {
            let mut m = Membership::connect(&url, &c.node_id, &advertise, lease)?;
            let secret = m.join(&fresh)?;
            Ok::<_, store::StoreError>((m, secret))
        })
        .join()
    });
    let (m, secret) = match joined {
        Ok(Ok(j)) => j,
        Ok(Err(e)) => return Err(format!("cluster: cannot join: {e}")),
        Err(_) => return Err("cluster: joining panicked".into()),
    };
    info!(node = %c.node_id, incarnation = m.incarnation(), advertise = %c.advertise, "cluster: joined");
    let settings = ClusterSettings { node_id: c.node_id.clone(), secret: secret.into_bytes() };
    let heartbeat = Duration::from_millis(c.heartbeat_ms);
    Ok(Some(Joined { m, fresh, heartbeat, lease, settings }))
}

/// Starts the heartbeat thread; `loaded` is the provisioning the switch
/// started with (only what differs from it is sent). Returns the thread
/// and the receiver of what the other nodes change.
pub fn start(
    joined: Joined,
    loaded: records::Provisioning,
) -> Result<(ClusterThread, mpsc::UnboundedReceiver<ClusterChange>), String> {
    let Joined { m, fresh, heartbeat, lease, .. } = joined;
    let (changes, changes_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = std_mpsc::channel::<()>();
    let mut beat =
        Heartbeat { m, fresh, lease, changes, standing: Standing::Judging, seen: loaded };
    let thread = std::thread::Builder::new()
        .name("cluster".into())
        .spawn(move || loop {
            beat.beat();
            match stop_rx.recv_timeout(heartbeat) {
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        })
        .map_err(|e| format!("cannot start the cluster thread: {e}"))?;
    Ok((ClusterThread { stop: Some(stop_tx), thread: Some(thread) }, changes_rx))
}

/// Whether this node judges the others' leases now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    /// It renews its lease every heartbeat: a lease that ran out is a dead
    /// node.
    Judging,
    /// The last heartbeat could not reach the database.
    Lost,
    /// Back since then, less than a lease ago: the other nodes may not have
    /// renewed since the database came back (a PostgreSQL restart), so
    /// nobody is reaped and the switch keeps its view of the nodes.
    Reconnected(Instant),
}

/// The cluster thread's state between heartbeats.
struct Heartbeat {
    m: Membership,
    fresh: String,
    lease: Duration,
    changes: mpsc::UnboundedSender<ClusterChange>,
    standing: Standing,
    /// Accounts and ring groups as last read.
    seen: records::Provisioning,
}

impl Heartbeat {
    /// One heartbeat: renew (join again when reaped), reap the dead, send
    /// the live nodes, every binding and changed provisioning. A database
    /// error is logged; the next heartbeat tries again (and resyncs fully).
    fn beat(&mut self) {
        if let Err(e) = self.round() {
            if self.standing != Standing::Lost {
                warn!(error = %e, "cluster: heartbeat failed");
            }
            self.standing = Standing::Lost;
            return;
        }
        self.provisioning();
    }

    fn round(&mut self) -> Result<(), store::StoreError> {
        if !self.m.renew()? {
            warn!(
                incarnation = self.m.incarnation(),
                "cluster: this node's lease ran out: joining again"
            );
            self.m.join(&self.fresh)?;
        }
        self.standing = match self.standing {
            Standing::Lost => Standing::Reconnected(Instant::now()),
            Standing::Reconnected(since) if since.elapsed() >= self.lease => {
                info!("cluster: database back for a lease: judging leases again");
                Standing::Judging
            }
            s => s,
        };
        if self.standing == Standing::Judging {
            for r in self.m.reap(wall())? {
                warn!(node = %r.node_id, groupcalls = r.closed.groupcalls, calls = r.closed.calls,
                      bindings = r.bindings, "cluster: node's lease ran out: its records closed");
            }
            let nodes = self.m.live()?.into_iter().filter_map(node).collect();
            let _ = self.changes.send(ClusterChange::Nodes(nodes));
        }
        let _ = self.changes.send(ClusterChange::AllBindings(self.m.bindings(wall())?));
        Ok(())
    }

    /// Sends the stored accounts and ring groups when they differ from the
    /// previous read (at first: from what the switch started with).
    fn provisioning(&mut self) {
        let now = match self.m.provisioned() {
            Ok(p) => p,
            Err(e) => return warn!(error = %e, "cluster: cannot read provisioning"),
        };
        if self.seen == now {
            return;
        }
        self.seen = now.clone();
        let (extensions, ring_groups) = (now.extensions.len(), now.ring_groups.len());
        info!(extensions, ring_groups, "cluster: provisioning changed");
        let _ = self.changes.send(ClusterChange::Provisioning(Box::new(now)));
    }
}

fn node(n: store::NodeLease) -> Option<Node> {
    let sip: SocketAddr = n.advertise.parse().ok()?;
    Some(Node { id: n.node_id, sip, incarnation: n.incarnation })
}
