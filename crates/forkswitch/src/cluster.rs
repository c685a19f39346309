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
use std::time::{Duration, SystemTime};
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

/// Joins the cluster (this node's id, taken back after a restart) and
/// starts the thread; returns it, the switch's cluster settings and the
/// receiver of what the other nodes change. `None` without `[cluster]`.
pub fn start(
    cfg: &Config,
) -> Result<Option<(ClusterThread, ClusterSettings, mpsc::UnboundedReceiver<ClusterChange>)>, String>
{
    let (Some(c), Some(url)) = (&cfg.cluster, cfg.database.store_url()) else {
        return Ok(None);
    };
    let heartbeat = Duration::from_millis(c.heartbeat_ms);
    let lease = Duration::from_millis(c.lease_ms);
    let (node_id, advertise) = (c.node_id.clone(), c.advertise.to_string());
    let fresh: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    let (joined_tx, joined_rx) = std_mpsc::channel();
    let (changes_tx, changes_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = std_mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("cluster".into())
        .spawn(move || {
            let joined = Membership::connect(&url, &node_id, &advertise, lease)
                .and_then(|mut m| m.join(&fresh).map(|secret| (m, secret)));
            let mut m = match joined {
                Ok((m, secret)) => {
                    let _ = joined_tx.send(Ok((secret, m.incarnation())));
                    m
                }
                Err(e) => {
                    let _ = joined_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let mut seen = store::Provisioned::default();
            loop {
                round(&mut m, &fresh, &changes_tx);
                provisioning(&mut m, &mut seen, &changes_tx);
                match stop_rx.recv_timeout(heartbeat) {
                    Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            }
        })
        .map_err(|e| format!("cannot start the cluster thread: {e}"))?;
    let running = ClusterThread { stop: Some(stop_tx), thread: Some(thread) };
    let (secret, incarnation) = joined_rx
        .recv()
        .map_err(|_| "the cluster thread ended before joining".to_owned())?
        .map_err(|e| format!("cluster: cannot join: {e}"))?;
    info!(node = %c.node_id, incarnation, advertise = %c.advertise, "cluster: joined");
    let settings = ClusterSettings { node_id: c.node_id.clone(), secret: secret.into_bytes() };
    Ok(Some((running, settings, changes_rx)))
}

/// One heartbeat: renew (join again when reaped), reap the dead, send the
/// live nodes and every binding. A database error is logged; the next
/// round tries again (and resyncs fully).
fn round(m: &mut Membership, fresh: &str, changes: &mpsc::UnboundedSender<ClusterChange>) {
    let r = (|| -> Result<(), store::StoreError> {
        if !m.renew()? {
            warn!(
                incarnation = m.incarnation(),
                "cluster: this node's lease ran out: joining again"
            );
            m.join(fresh)?;
        }
        for r in m.reap(wall())? {
            warn!(node = %r.node_id, groupcalls = r.closed.groupcalls, calls = r.closed.calls,
                  bindings = r.bindings, "cluster: node's lease ran out: its records closed");
        }
        let nodes = m.live()?.into_iter().filter_map(node).collect();
        let _ = changes.send(ClusterChange::Nodes(nodes));
        let _ = changes.send(ClusterChange::AllBindings(m.bindings(wall())?));
        Ok(())
    })();
    if let Err(e) = r {
        warn!(error = %e, "cluster: heartbeat failed");
    }
}

/// Sends the stored accounts and ring groups when they differ from `seen`
/// (the previous read; the first read is what the switch started with).
fn provisioning(
    m: &mut Membership,
    seen: &mut store::Provisioned,
    changes: &mpsc::UnboundedSender<ClusterChange>,
) {
    let now = match m.provisioned() {
        Ok(p) => p,
        Err(e) => return warn!(error = %e, "cluster: cannot read provisioning"),
    };
    if *seen == now {
        return;
    }
    let first = *seen == store::Provisioned::default();
    *seen = now.clone();
    if first {
        return;
    }
    let store::Provisioned { customers, domains, extensions, ring_groups } = now;
    info!(
        extensions = extensions.len(),
        ring_groups = ring_groups.len(),
        "cluster: provisioning changed"
    );
    let p = switch::Provisioning { customers, domains, extensions, ring_groups };
    let _ = changes.send(ClusterChange::Provisioning(Box::new(p)));
}

fn node(n: store::NodeLease) -> Option<Node> {
    let sip: SocketAddr = n.advertise.parse().ok()?;
    Some(Node { id: n.node_id, sip, incarnation: n.incarnation })
}
