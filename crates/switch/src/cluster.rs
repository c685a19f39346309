//! This switch as one node of a cluster of forkswitch nodes sharing one
//! PostgreSQL (`[cluster]`). The shell reads the shared database (leases,
//! LISTEN/NOTIFY and the rows they name) and hands what other nodes changed
//! to the core as [`ClusterChange`] inputs; what this node changes leaves as
//! the usual outputs ([`crate::Persist`]), which the shell writes. Nothing
//! here touches the database or a clock.
//!
//! - Bindings: another node's binding is held as its ([`registrar::Location::via`]);
//!   a call for it goes through that node (the relay hop), since only that
//!   node's flow reaches the phone.
//! - Nodes: the live nodes and where their SIP is; a node that leaves the
//!   list (its lease ran out, or it came back as a new incarnation) is
//!   down: its bindings are unreachable, and requests waiting for an answer
//!   from it fail at once, so forks go on to their next destination.
//! - Provisioning: accounts and ring groups as stored replace the held
//!   ones; round-robin and least-recent memories are merged.

use crate::output::{Event, Output};
use crate::switch::Switch;
use records::{Binding, Extension, HuntMemoryRecord, Provisioning};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// This node's place in its cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `[cluster] node_id`: written in every record and binding this node
    /// makes.
    pub node_id: String,
    /// The cluster's secret (read from the shared database): the key of the
    /// tokens that let one node's relayed INVITE into another.
    pub secret: Vec<u8>,
}

/// A live node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Its `node_id`.
    pub id: String,
    /// Where it takes SIP from other nodes (`[cluster] advertise`, UDP).
    pub sip: SocketAddr,
    /// Its run: a node that restarted comes back with a higher one (the old
    /// run is down).
    pub incarnation: i64,
}

/// What other nodes of the cluster changed, as read from the shared
/// database: one [`crate::Input::Cluster`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterChange {
    /// The nodes live now (this one included or not: it is ignored). A
    /// node no longer listed, or listed with another incarnation, is down.
    Nodes(Vec<Node>),
    /// The bindings of `aors` as stored now, whatever node made them: other
    /// nodes' replace what this node held of them.
    Bindings {
        /// The AORs read again.
        aors: Vec<String>,
        /// Their stored bindings.
        stored: Vec<Binding>,
    },
    /// Every stored binding (after the shell lost the change feed): other
    /// nodes' replace all this node held of theirs.
    AllBindings(Vec<Binding>),
    /// Accounts and ring groups changed (on any node, by its API or its
    /// config file): these replace the held ones.
    Provisioning(Box<Provisioning>),
    /// A round-robin or least-recent group's memory as stored: merged into
    /// this node's.
    HuntMemory(records::HuntMemoryRecord),
}

/// The cluster as this node knows it.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) settings: ClusterSettings,
    /// Live nodes other than this one, by id.
    nodes: BTreeMap<String, Node>,
    /// How many of other nodes' bindings are held (last reported).
    held_remote: usize,
}

impl Cluster {
    pub(crate) fn new(settings: ClusterSettings) -> Cluster {
        Cluster { settings, nodes: BTreeMap::new(), held_remote: 0 }
    }

    /// Where live node `id` takes SIP from other nodes.
    pub(crate) fn node_sip(&self, id: &str) -> Option<SocketAddr> {
        self.nodes.get(id).map(|n| n.sip)
    }
}

impl Switch {
    /// This node's id; empty without a cluster.
    pub(crate) fn node_id(&self) -> &str {
        self.cluster.as_ref().map_or("", |c| c.settings.node_id.as_str())
    }

    /// Takes a change another node made. Ignored without a cluster.
    pub(crate) fn on_cluster(&mut self, now: crate::Now, change: ClusterChange) {
        if self.cluster.is_none() {
            return;
        }
        match change {
            ClusterChange::Nodes(nodes) => self.set_nodes(now, nodes),
            ClusterChange::Bindings { aors, stored } => self.replace_remote(aors, stored),
            ClusterChange::AllBindings(stored) => {
                let mut aors = self.registrar.location().remote_aors();
                aors.extend(stored.iter().map(|b| b.aor.clone()));
                aors.sort_unstable();
                aors.dedup();
                self.replace_remote(aors, stored);
            }
            ClusterChange::Provisioning(p) => self.replace_provisioning(*p),
            ClusterChange::HuntMemory(record) => self.merge_hunt(record),
        }
    }

    fn set_nodes(&mut self, now: crate::Now, nodes: Vec<Node>) {
        let Some(cluster) = self.cluster.as_mut() else { return };
        let own = cluster.settings.node_id.clone();
        let next: BTreeMap<String, Node> =
            nodes.into_iter().filter(|n| n.id != own).map(|n| (n.id.clone(), n)).collect();
        let gone: Vec<Node> = cluster
            .nodes
            .values()
            .filter(|n| next.get(&n.id).is_none_or(|m| m.incarnation != n.incarnation))
            .cloned()
            .collect();
        cluster.nodes = next;
        for node in gone {
            self.node_down(now, &node);
        }
    }

    /// `node` is down: its bindings are unreachable and what waits for its
    /// answer fails now.
    fn node_down(&mut self, now: crate::Now, node: &Node) {
        let bindings = self.registrar.location_mut().node_down(&node.id);
        self.tx.peer_lost(now.at, node.sip);
        self.out.push_back(Output::Event(Event::NodeDown { node: node.id.clone(), bindings }));
    }

    fn replace_remote(&mut self, aors: Vec<String>, stored: Vec<Binding>) {
        let own = self.node_id().to_owned();
        let mut by_aor: BTreeMap<String, Vec<Binding>> = BTreeMap::new();
        for b in stored {
            by_aor.entry(b.aor.clone()).or_default().push(b);
        }
        let location = self.registrar.location_mut();
        for aor in aors {
            let theirs = by_aor.remove(&aor).unwrap_or_default();
            location.replace_remote(&aor, theirs, &own);
        }
        let held: usize =
            location.aors().map(|(_, list)| list.iter().filter(|l| l.via.is_some()).count()).sum();
        if let Some(cluster) = self.cluster.as_mut().filter(|c| c.held_remote != held) {
            cluster.held_remote = held;
            self.out.push_back(Output::Event(Event::ClusterBindings { held }));
        }
    }

    /// Replaces accounts and ring groups with the stored ones. Extensions
    /// that are gone lose their bindings here too. A set of groups whose
    /// numbers clash is refused whole (an event says why).
    fn replace_provisioning(&mut self, p: Provisioning) {
        if let Err(e) = self.routes.set_groups(p.ring_groups) {
            let reason = format!("{}.{}: {}", e.table, e.key, e.reason);
            self.out.push_back(Output::Event(Event::ProvisioningRefused { reason }));
            return;
        }
        let next = registrar::Accounts::new(p.customers, p.domains, p.extensions);
        let gone: Vec<String> = self
            .registrar
            .accounts()
            .extensions()
            .filter(|e| next.extension(&e.name, &e.domain).is_none())
            .map(Extension::aor)
            .collect();
        self.registrar.set_accounts(next);
        for aor in gone {
            self.registrar.location_mut().remove_aor(&aor);
        }
    }

    fn merge_hunt(&mut self, stored: HuntMemoryRecord) {
        let group = stored.group_id;
        let mut mine = match self.hunt.get(&group) {
            Some(m) => crate::dialer::hunt_record(group, m),
            None => HuntMemoryRecord { group_id: group, ..Default::default() },
        };
        mine.merge(&stored);
        let (group, memory) = crate::dialer::hunt_from_record(mine);
        self.hunt.insert(group, memory);
    }
}
