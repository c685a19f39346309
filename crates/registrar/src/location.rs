//! The location service: registered contacts per address-of-record.
//!
//! A plain in-memory map keyed by AOR `ext@domain` (as made by
//! [`records::Extension::aor`]), owned by value by one owner (the registrar,
//! or the switch's state machine): reads take `&self`, changes `&mut self`,
//! no locks.
//!
//! Persistence is an output: every change that must be stored durably is
//! queued as a [`BindingChange`], in the order it was made, and the owner
//! drains the queue with [`LocationStore::poll_change`] and writes it to its
//! database. [`LocationStore::load`] restores the bindings at start-up (and
//! queues nothing). The stream connection a binding was registered over, and
//! whether it has closed, are kept here only, in [`Location::conn`] and
//! [`Location::closed`]: they are not persisted.

use records::{Binding, Timestamp};
use sip_message::{ConnId, Peer, Transport};
use std::collections::{BTreeMap, HashSet, VecDeque};

/// A binding change to store durably (the owner writes it to its database).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindingChange {
    /// A binding was added or refreshed (keyed by `aor` and `contact`).
    Upsert(Box<Binding>),
    /// The binding `contact` of `aor` was removed.
    Remove {
        /// The address-of-record.
        aor: String,
        /// The Contact URI, exactly as registered.
        contact: String,
    },
}

/// One registered contact and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The binding (persisted).
    pub binding: Binding,
    /// The stream (TCP, TLS, WS) connection it was registered over (memory only).
    pub conn: Option<ConnId>,
    /// The stream connection this binding was registered over has closed (an
    /// RFC 5626 flow failure), or its node died: it cannot be reached until
    /// it registers again (memory only).
    pub closed: bool,
    /// Another cluster node's binding (its `node_id`): that node holds the
    /// flow, so requests go through it; `None` for this node's own
    /// (memory only: the stored binding names its node).
    pub via: Option<String>,
}

impl Location {
    /// `true` once the binding's expiry time has passed.
    pub fn is_expired(&self, wall: Timestamp) -> bool {
        self.binding.expires_at <= wall
    }

    /// Whole seconds left before expiry (rounded up; 0 when expired).
    pub fn expires_in(&self, wall: Timestamp) -> u32 {
        let us = self.binding.expires_at.micros().saturating_sub(wall.micros()).max(0);
        u32::try_from(us.saturating_add(999_999) / 1_000_000).unwrap_or(u32::MAX)
    }

    /// Where requests for this contact go: the source address and transport
    /// of its REGISTER, over the same stream connection when there is one (NAT
    /// traversal, RFC 5626 flows). A TCP or TLS binding loaded from the
    /// database has no connection (none survives a restart) and its source
    /// port was the phone's ephemeral one: a new connection goes to the
    /// address in its Contact instead, when that is an IP address (where the
    /// phone listens, RFC 3261 section 18.2.2).
    pub fn target(&self) -> Peer {
        let transport = self.transport();
        let remote = match (transport, self.conn) {
            (Transport::Tcp | Transport::Tls, None) => {
                contact_address(&self.binding.contact, transport).unwrap_or(self.binding.source)
            }
            _ => self.binding.source,
        };
        Peer {
            transport,
            remote,
            local: self.binding.local,
            conn: if transport.is_reliable() { self.conn } else { None },
        }
    }

    /// The transport it registered over (UDP when the stored token is
    /// unknown).
    fn transport(&self) -> Transport {
        Transport::from_token(self.binding.transport.as_bytes()).unwrap_or(Transport::Udp)
    }

    /// Whether nothing can open a connection to this binding: a WebSocket
    /// client (it accepts none) or a Contact host ending in `.invalid`
    /// (RFC 7118's browser contacts): reached only over the connection it
    /// registered on.
    fn reached_only_by_its_flow(&self) -> bool {
        let ws = matches!(self.transport(), Transport::Ws | Transport::Wss);
        let host =
            uri_of(&self.binding.contact).map(|u| u.host.to_ascii_lowercase()).unwrap_or_default();
        ws || host.ends_with(b".invalid")
    }
}

/// The Contact URI in `contact` (with or without angle brackets).
fn uri_of(contact: &str) -> Option<sip_message::Uri<'_>> {
    let bare = contact.trim().trim_start_matches('<').trim_end_matches('>');
    sip_message::Uri::parse(bare.as_bytes()).ok()
}

/// The socket address a Contact URI names, when its host is an IP address
/// (default port 5060, 5061 for TLS or `sips:`).
fn contact_address(contact: &str, transport: Transport) -> Option<std::net::SocketAddr> {
    let uri = uri_of(contact)?;
    let host = std::str::from_utf8(uri.host).ok()?;
    let ip: std::net::IpAddr = host.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    let secure = transport == Transport::Tls || uri.scheme == sip_message::Scheme::Sips;
    Some(std::net::SocketAddr::new(ip, uri.port.unwrap_or(if secure { 5061 } else { 5060 })))
}

/// Whether `b` belongs to another cluster node than `own` (never without
/// a cluster).
fn is_remote(b: &Binding, own: &str) -> bool {
    !own.is_empty() && !b.node_id.is_empty() && b.node_id != own
}

/// Another node's binding as held here.
fn remote(b: Binding) -> Location {
    let via = Some(b.node_id.clone());
    Location { closed: b.unreachable, binding: b, conn: None, via }
}

/// Puts `loc` in `list`, replacing the binding with the same contact.
fn put(list: &mut Vec<Location>, loc: Location) {
    match list.iter_mut().find(|l| l.binding.contact == loc.binding.contact) {
        Some(slot) => *slot = loc,
        None => list.push(loc),
    }
}

/// A change to an AOR's bindings.
// Changes are few and short-lived: boxing the location is not worth it.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add the location, replacing one with the same contact string.
    Upsert(Location),
    /// Remove the binding with this contact string.
    Remove(String),
}

/// Registered bindings per AOR, and the queue of [`BindingChange`]s not yet
/// drained by the owner.
///
/// Single owner: nothing here locks. The owner must drain
/// [`LocationStore::poll_change`] after each call that changes bindings
/// (or the queue grows with every change). AORs are kept in name order, so
/// whatever walks them (keep-alives, expiry) does so in the same order on
/// every run.
#[derive(Default)]
pub struct LocationStore {
    map: BTreeMap<String, Vec<Location>>,
    changes: VecDeque<BindingChange>,
}

impl std::fmt::Debug for LocationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocationStore")
            .field("aors", &self.map.len())
            .field("pending_changes", &self.changes.len())
            .finish()
    }
}

/// Highest q first; a stable sort, so equal q keeps store order.
pub(crate) fn by_q_desc(v: &mut [Location]) {
    v.sort_by_key(|l| std::cmp::Reverse(l.binding.q));
}

/// Applies `changes` to `list` (the bindings of `aor`), queueing what must be
/// stored to `out`.
fn apply_to(
    aor: &str,
    list: &mut Vec<Location>,
    changes: Vec<Change>,
    out: &mut VecDeque<BindingChange>,
) {
    for c in changes {
        match c {
            Change::Upsert(mut loc) => {
                if loc.binding.aor != aor {
                    loc.binding.aor = aor.to_owned();
                }
                out.push_back(BindingChange::Upsert(Box::new(loc.binding.clone())));
                match list.iter_mut().find(|l| l.binding.contact == loc.binding.contact) {
                    Some(slot) => *slot = loc,
                    None => list.push(loc),
                }
            }
            Change::Remove(contact) => {
                let before = list.len();
                list.retain(|l| l.binding.contact != contact);
                if list.len() != before {
                    out.push_back(BindingChange::Remove { aor: aor.to_owned(), contact });
                }
            }
        }
    }
}

impl LocationStore {
    /// An empty store.
    pub fn new() -> LocationStore {
        LocationStore::default()
    }

    /// The next binding change to store durably, oldest first; `None` when
    /// all have been drained.
    pub fn poll_change(&mut self) -> Option<BindingChange> {
        self.changes.pop_front()
    }

    /// Unexpired bindings of `aor`, highest q first (equal q: oldest
    /// registration first).
    pub fn lookup(&self, aor: &str, wall: Timestamp) -> Vec<Binding> {
        self.locations(aor, wall).into_iter().map(|l| l.binding).collect()
    }

    /// Like [`LocationStore::lookup`], with the stream connection of each.
    pub fn locations(&self, aor: &str, wall: Timestamp) -> Vec<Location> {
        self.collect(aor, |l| !l.is_expired(wall))
    }

    /// Like [`LocationStore::locations`], without the bindings whose
    /// connection has closed ([`Location::closed`]): the ones a request can
    /// be sent to now.
    pub fn reachable(&self, aor: &str, wall: Timestamp) -> Vec<Location> {
        self.collect(aor, |l| !l.is_expired(wall) && !l.closed)
    }

    fn collect(&self, aor: &str, keep: impl Fn(&Location) -> bool) -> Vec<Location> {
        let mut v: Vec<Location> = match self.map.get(aor) {
            Some(list) => list.iter().filter(|l| keep(l)).cloned().collect(),
            None => Vec::new(),
        };
        by_q_desc(&mut v);
        v
    }

    /// Every AOR with bindings and its bindings (expired ones not yet swept
    /// included, in store order); AORs in name order.
    pub fn aors(&self) -> impl Iterator<Item = (&str, &[Location])> + '_ {
        self.map.iter().map(|(aor, list)| (aor.as_str(), list.as_slice()))
    }

    /// Where every unexpired UDP binding is reached (source address, local
    /// address): the targets of NAT keep-alive pings. Deduplicated, in AOR
    /// name order then store order (the first binding behind a target
    /// places it).
    pub fn udp_targets(&self, wall: Timestamp) -> Vec<Peer> {
        let mut seen: HashSet<Peer> = HashSet::new();
        let mut out: Vec<Peer> = Vec::new();
        for list in self.map.values() {
            for l in list.iter().filter(|l| !l.is_expired(wall) && l.via.is_none()) {
                let t = l.target();
                if t.transport == Transport::Udp && seen.insert(t) {
                    out.push(t);
                }
            }
        }
        out
    }

    /// Applies `changes` to `aor`.
    pub fn apply(&mut self, aor: &str, changes: Vec<Change>) {
        let r: Result<_, std::convert::Infallible> = self.update(aor, |_| Ok((changes, ())));
        let _ = r;
    }

    /// Reads and changes `aor` in one step: `f` sees its current bindings
    /// (expired ones included) and returns the changes to make, or an error
    /// and nothing changes. Returns the bindings afterwards (expired ones
    /// included, in store order).
    pub fn update<T, E>(
        &mut self,
        aor: &str,
        f: impl FnOnce(&[Location]) -> Result<(Vec<Change>, T), E>,
    ) -> Result<(Vec<Location>, T), E> {
        let current = self.map.get(aor).map_or(&[][..], Vec::as_slice);
        let (changes, t) = f(current)?;
        if changes.is_empty() {
            return Ok((current.to_vec(), t));
        }
        let list = self.map.entry(aor.to_owned()).or_default();
        apply_to(aor, list, changes, &mut self.changes);
        let after = list.clone();
        if after.is_empty() {
            self.map.remove(aor);
        }
        Ok((after, t))
    }

    /// Removes every binding whose expiry time has passed; returns them.
    /// AORs are visited in name order (so the queued removals are in a
    /// deterministic order), bindings in store order.
    pub fn expire(&mut self, wall: Timestamp) -> Vec<(String, Binding)> {
        let hit: Vec<String> = self
            .map
            .iter()
            .filter(|(_, list)| list.iter().any(|l| l.is_expired(wall)))
            .map(|(aor, _)| aor.clone())
            .collect();
        let mut gone = Vec::new();
        for aor in hit {
            let Some(list) = self.map.get_mut(&aor) else { continue };
            list.retain(|l| {
                if l.is_expired(wall) {
                    // Another node's binding is its node's to remove.
                    if l.via.is_none() {
                        self.changes.push_back(BindingChange::Remove {
                            aor: aor.clone(),
                            contact: l.binding.contact.clone(),
                        });
                    }
                    gone.push((aor.clone(), l.binding.clone()));
                    false
                } else {
                    true
                }
            });
            if list.is_empty() {
                self.map.remove(&aor);
            }
        }
        gone
    }

    /// Removes every binding of `aor` (an extension was deleted); returns them.
    pub fn remove_aor(&mut self, aor: &str) -> Vec<Binding> {
        let Some(list) = self.map.remove(aor) else { return Vec::new() };
        for l in &list {
            self.changes.push_back(BindingChange::Remove {
                aor: aor.to_owned(),
                contact: l.binding.contact.clone(),
            });
        }
        list.into_iter().map(|l| l.binding).collect()
    }

    /// Restores bindings read from the database at start-up (queues no
    /// [`BindingChange`]). A binding with the same AOR and contact as one
    /// already loaded replaces it. One that only the connection it registered
    /// over could reach (WebSocket, `.invalid` Contact) is loaded
    /// [`Location::closed`]: that connection is gone with the old process, so
    /// it is skipped until it registers again (browsers reconnect and do).
    pub fn load(&mut self, bindings: Vec<Binding>) {
        self.load_as(bindings, "");
    }

    /// [`LocationStore::load`] on cluster node `own`: the bindings of other
    /// nodes are held as theirs ([`Location::via`], unreachable when their
    /// node's lease ran out); this node's own are restored as after a
    /// restart. Without a cluster (`own` empty) every binding is this node's.
    pub fn load_as(&mut self, bindings: Vec<Binding>, own: &str) {
        for b in bindings {
            let loc = if is_remote(&b, own) {
                remote(b)
            } else {
                let mut loc = Location { binding: b, conn: None, closed: false, via: None };
                loc.closed = loc.reached_only_by_its_flow();
                loc
            };
            put(self.map.entry(loc.binding.aor.clone()).or_default(), loc);
        }
    }

    /// Another node's view of `aor` (cluster): `stored` are its bindings as
    /// the shared database holds them now, whatever node made them. Every
    /// binding of `aor` held for another node is replaced by them; one of
    /// this node's that another node now holds (the phone registered there
    /// since) becomes that node's; this node's others stay (what it wrote
    /// last is the database's truth, or will be). Queues nothing.
    pub fn replace_remote(&mut self, aor: &str, stored: Vec<Binding>, own: &str) {
        let list = self.map.entry(aor.to_owned()).or_default();
        list.retain(|l| l.via.is_none());
        for b in stored {
            if b.aor != aor {
                continue;
            }
            if is_remote(&b, own) {
                put(list, remote(b));
            }
        }
        if list.is_empty() {
            self.map.remove(aor);
        }
    }

    /// Every AOR with a binding of another node (cluster).
    pub fn remote_aors(&self) -> Vec<String> {
        self.map
            .iter()
            .filter(|(_, list)| list.iter().any(|l| l.via.is_some()))
            .map(|(aor, _)| aor.clone())
            .collect()
    }

    /// Cluster node `node` died (its lease ran out): its bindings are
    /// unreachable ([`Location::closed`]) until they are stored again.
    /// Returns how many were marked.
    pub fn node_down(&mut self, node: &str) -> usize {
        let mut n = 0;
        for list in self.map.values_mut() {
            for l in list.iter_mut().filter(|l| l.via.as_deref() == Some(node) && !l.closed) {
                l.closed = true;
                n += 1;
            }
        }
        n
    }

    /// Stream connection `conn` closed (an RFC 5626 flow failure): every
    /// binding registered over it forgets it ([`Location::conn`] becomes
    /// `None`) and is marked [`Location::closed`] until it registers again.
    /// The bindings stay (and are not persisted differently). Returns how
    /// many were marked.
    pub fn connection_closed(&mut self, conn: ConnId) -> usize {
        let mut n = 0;
        for list in self.map.values_mut() {
            for l in list.iter_mut().filter(|l| l.conn == Some(conn)) {
                l.conn = None;
                l.closed = true;
                n += 1;
            }
        }
        n
    }

    /// Number of bindings (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.map.values().map(Vec::len).sum()
    }

    /// `true` when there are no bindings.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Number of AORs with bindings.
    pub fn aor_count(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drains the store's changes as the owner would, one line each.
    fn take(store: &mut LocationStore) -> Vec<String> {
        std::iter::from_fn(|| store.poll_change())
            .map(|c| match c {
                BindingChange::Upsert(b) => {
                    format!("upsert {} {} {}", b.aor, b.contact, b.expires_at.micros())
                }
                BindingChange::Remove { aor, contact } => format!("remove {aor} {contact}"),
            })
            .collect()
    }

    fn binding(aor: &str, contact: &str, q: u16, expires_s: i64) -> Binding {
        Binding {
            aor: aor.into(),
            contact: contact.into(),
            instance: None,
            reg_id: None,
            q,
            expires_at: Timestamp::from_micros(expires_s * 1_000_000),
            call_id: "c".into(),
            cseq: 1,
            transport: "TCP".into(),
            source: "192.0.2.1:5060".parse().expect("addr"),
            local: "192.0.2.100:5060".parse().expect("addr"),
            user_agent: String::new(),
            node_id: String::new(),
            conn: None,
            unreachable: false,
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_micros(s * 1_000_000)
    }

    /// After a restart: TCP/TLS bindings are dialed at their Contact's
    /// address (their source port was ephemeral), WebSocket and `.invalid`
    /// ones are skipped until they register again; with a live connection
    /// the source and the connection are used, as before.
    #[test]
    fn loaded_stream_bindings_go_to_their_contact_or_wait_for_a_register() {
        let mut store = LocationStore::new();
        let with = |contact: &str, transport: &str| Binding {
            transport: transport.into(),
            ..binding("a@test", contact, 1000, 100)
        };
        store.load(vec![
            with("sip:a@192.0.2.7:5070;transport=tcp", "TCP"),
            with("<sips:a@[2001:db8::7]>", "TLS"),
            with("sip:a@192.0.2.8;transport=tls", "TLS"),
            with("sip:a@phone.example.com;transport=tcp", "TCP"),
            with("sip:a@192.0.2.9:5080", "UDP"),
            with("sip:a@k2m9q.invalid;transport=ws", "WS"),
            with("sip:a@192.0.2.10:5090;transport=wss", "WSS"),
            with("sip:a@r4.invalid;transport=tcp", "TCP"),
        ]);
        let remotes: Vec<String> = store
            .reachable("a@test", at(1))
            .iter()
            .map(|l| format!("{} {}", l.binding.transport, l.target().remote))
            .collect();
        assert_eq!(
            remotes,
            [
                "TCP 192.0.2.7:5070",
                "TLS [2001:db8::7]:5061",
                "TLS 192.0.2.8:5061",
                "TCP 192.0.2.1:5060", // a name: the source, as before
                "UDP 192.0.2.1:5060", // UDP: the source (NAT)
            ]
        );
        // Registered over a live connection: the source and that connection.
        let live = Location {
            binding: with("sip:a@192.0.2.7:5070;transport=tcp", "TCP"),
            conn: Some(3),
            closed: false,
            via: None,
        };
        assert_eq!(
            (live.target().remote.to_string(), live.target().conn),
            ("192.0.2.1:5060".into(), Some(3))
        );
    }

    #[test]
    fn persistence_sees_add_refresh_remove_expire() {
        let mut store = LocationStore::new();
        let aor = "a@test";
        let loc = |c: &str, exp| Location {
            binding: binding(aor, c, 1000, exp),
            conn: Some(9),
            closed: false,
            via: None,
        };
        store.apply(aor, vec![Change::Upsert(loc("sip:a@1", 100))]);
        store.apply(aor, vec![Change::Upsert(loc("sip:a@1", 200))]);
        store.apply(aor, vec![Change::Upsert(loc("sip:a@2", 50))]);
        assert_eq!(store.len(), 2);
        store.apply(aor, vec![Change::Remove("sip:a@1".into())]);
        store.apply(aor, vec![Change::Remove("sip:nothing@x".into())]);
        let gone = store.expire(at(60));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, aor);
        assert_eq!(
            take(&mut store),
            vec![
                "upsert a@test sip:a@1 100000000",
                "upsert a@test sip:a@1 200000000",
                "upsert a@test sip:a@2 50000000",
                "remove a@test sip:a@1",
                "remove a@test sip:a@2",
            ]
        );
        assert!(store.is_empty());
        assert_eq!(store.aor_count(), 0);
    }

    #[test]
    fn lookup_sorted_unexpired_and_load() {
        let mut store = LocationStore::new();
        store.load(vec![
            binding("a@test", "sip:a@1", 500, 100),
            binding("a@test", "sip:a@2", 1000, 100),
            binding("a@test", "sip:a@3", 800, 10),
            binding("b@test", "sip:b@1", 1000, 100),
        ]);
        assert!(take(&mut store).is_empty(), "load does not write back");
        let v = store.lookup("a@test", at(20));
        let contacts: Vec<&str> = v.iter().map(|b| b.contact.as_str()).collect();
        assert_eq!(contacts, ["sip:a@2", "sip:a@1"]);
        assert_eq!(store.len(), 4);
        assert_eq!(store.aor_count(), 2);
        assert!(store.lookup("nobody@test", at(0)).is_empty());
        assert_eq!(store.remove_aor("b@test").len(), 1);
        assert_eq!(take(&mut store), vec!["remove b@test sip:b@1"]);
    }

    #[test]
    fn update_is_all_or_nothing() {
        let mut store = LocationStore::new();
        let r: Result<(Vec<Location>, ()), &str> = store.update("a@test", |cur| {
            assert!(cur.is_empty());
            Err("no")
        });
        assert!(r.is_err());
        assert_eq!(store.aor_count(), 0, "a failed update leaves no empty entry");
    }

    #[test]
    fn connections_and_targets() {
        let mut store = LocationStore::new();
        let b = binding("a@test", "sip:a@1", 1000, 100);
        store.apply(
            "a@test",
            vec![Change::Upsert(Location { binding: b, conn: Some(4), closed: false, via: None })],
        );
        let l = store.locations("a@test", at(0));
        assert_eq!(l[0].target().conn, Some(4));
        assert_eq!(l[0].target().transport, Transport::Tcp);
        assert_eq!(l[0].expires_in(at(0)), 100);
        assert_eq!(l[0].expires_in(Timestamp::from_micros(99_500_000)), 1);
        store.connection_closed(4);
        assert_eq!(store.locations("a@test", at(0))[0].conn, None);
    }

    fn tcp(b: Binding, conn: ConnId) -> Change {
        Change::Upsert(Location { binding: b, conn: Some(conn), closed: false, via: None })
    }

    #[test]
    fn connection_closed_marks_bindings_and_reachable_skips_them() {
        let mut store = LocationStore::new();
        store.apply("a@test", vec![tcp(binding("a@test", "sip:a@1", 1000, 100), 4)]);
        store.apply("a@test", vec![tcp(binding("a@test", "sip:a@2", 500, 100), 5)]);
        store.apply("b@test", vec![tcp(binding("b@test", "sip:b@1", 1000, 100), 4)]);
        take(&mut store);
        assert_eq!(store.reachable("a@test", at(0)).len(), 2);

        assert_eq!(store.connection_closed(4), 2, "a@1 and b@1 were over connection 4");
        assert_eq!(store.connection_closed(4), 0, "nothing is over it any more");
        assert_eq!(store.connection_closed(99), 0);
        assert!(take(&mut store).is_empty(), "closing is not persisted");

        // Still registered (listed by locations, counted), but not reachable.
        let all = store.locations("a@test", at(0));
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].binding.contact.as_str(), all[0].closed), ("sip:a@1", true));
        assert_eq!(all[0].conn, None);
        assert_eq!(all[0].target().conn, None);
        assert_eq!((all[1].binding.contact.as_str(), all[1].closed), ("sip:a@2", false));
        assert_eq!(all[1].conn, Some(5));
        let r = store.reachable("a@test", at(0));
        let contacts: Vec<&str> = r.iter().map(|l| l.binding.contact.as_str()).collect();
        assert_eq!(contacts, ["sip:a@2"]);
        assert!(store.reachable("b@test", at(0)).is_empty());
        assert_eq!(store.locations("b@test", at(0)).len(), 1);
        assert_eq!(store.len(), 3);
        // Expired bindings are not reachable either.
        assert!(store.reachable("a@test", at(100)).is_empty());
    }

    #[test]
    fn re_registration_clears_closed() {
        let mut store = LocationStore::new();
        store.apply("a@test", vec![tcp(binding("a@test", "sip:a@1", 1000, 100), 4)]);
        store.connection_closed(4);
        assert!(store.reachable("a@test", at(0)).is_empty());
        // The phone registers again over a new connection.
        store.apply("a@test", vec![tcp(binding("a@test", "sip:a@1", 1000, 200), 8)]);
        let r = store.reachable("a@test", at(0));
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].conn, r[0].closed), (Some(8), false));
        assert_eq!(store.len(), 1, "the same contact was replaced");
        assert_eq!(
            take(&mut store),
            vec!["upsert a@test sip:a@1 100000000", "upsert a@test sip:a@1 200000000"]
        );
    }

    #[test]
    fn udp_targets_are_in_aor_order_and_deduplicated() {
        let mut store = LocationStore::new();
        let udp = |aor: &str, source: &str, expires_s: i64| Binding {
            transport: "UDP".into(),
            source: source.parse().expect("addr"),
            ..binding(aor, &format!("sip:x@{source}"), 1000, expires_s)
        };
        store.load(vec![
            udp("c@test", "192.0.2.3:5060", 100),
            udp("a@test", "192.0.2.9:5060", 100),
            udp("b@test", "192.0.2.1:5060", 100),
            udp("b@test", "192.0.2.9:5060", 100),
            udp("d@test", "192.0.2.4:5060", 10),
            binding("e@test", "sip:x@192.0.2.5", 1000, 100),
        ]);
        let remotes: Vec<String> =
            store.udp_targets(at(20)).iter().map(|p| p.remote.to_string()).collect();
        assert_eq!(remotes, ["192.0.2.9:5060", "192.0.2.1:5060", "192.0.2.3:5060"]);
    }

    #[test]
    fn aors_lists_everything_and_expire_is_in_aor_order() {
        let mut store = LocationStore::new();
        for aor in ["c@test", "a@test", "b@test"] {
            store.apply(aor, vec![tcp(binding(aor, "sip:x@1", 1000, 10), 1)]);
            store.apply(aor, vec![tcp(binding(aor, "sip:x@2", 1000, 100), 1)]);
        }
        let mut listed: Vec<(&str, usize)> = store.aors().map(|(a, l)| (a, l.len())).collect();
        listed.sort_unstable();
        assert_eq!(listed, [("a@test", 2), ("b@test", 2), ("c@test", 2)]);
        take(&mut store);
        let gone: Vec<String> =
            store.expire(at(10)).into_iter().map(|(a, b)| format!("{a} {}", b.contact)).collect();
        assert_eq!(gone, ["a@test sip:x@1", "b@test sip:x@1", "c@test sip:x@1"]);
        assert_eq!(
            take(&mut store),
            vec!["remove a@test sip:x@1", "remove b@test sip:x@1", "remove c@test sip:x@1"]
        );
        assert_eq!(store.len(), 3);
    }

    fn on(node: &str, b: Binding) -> Binding {
        Binding { node_id: node.into(), transport: "UDP".into(), ..b }
    }

    /// A cluster node holds other nodes' bindings as theirs: loaded or
    /// replaced, never written back, not pinged, not expired into removals;
    /// a phone that registers elsewhere moves there; a dead node's are
    /// unreachable until stored again.
    #[test]
    fn other_nodes_bindings_are_held_as_theirs() {
        let mut store = LocationStore::new();
        store.load_as(
            vec![
                on("n1", binding("a@test", "sip:a@1", 1000, 100)),
                on("n2", binding("a@test", "sip:a@2", 1000, 100)),
                Binding { unreachable: true, ..on("n3", binding("b@test", "sip:b@3", 1000, 100)) },
            ],
            "n1",
        );
        let via = |store: &LocationStore, aor: &str| -> Vec<String> {
            store
                .reachable(aor, at(0))
                .iter()
                .map(|l| format!("{} {:?}", l.binding.contact, l.via))
                .collect()
        };
        assert_eq!(via(&store, "a@test"), ["sip:a@1 None", "sip:a@2 Some(\"n2\")"]);
        assert!(via(&store, "b@test").is_empty(), "n3's lease ran out");
        assert_eq!(store.udp_targets(at(0)).len(), 1, "only this node's flows are pinged");
        assert_eq!(store.remote_aors(), ["a@test", "b@test"]);

        // a@1 registered on n2 since; a@2 is gone; a@4 is n3's.
        let now = vec![
            on("n2", binding("a@test", "sip:a@1", 1000, 200)),
            on("n3", binding("a@test", "sip:a@4", 1000, 200)),
        ];
        store.replace_remote("a@test", now, "n1");
        assert_eq!(via(&store, "a@test"), ["sip:a@1 Some(\"n2\")", "sip:a@4 Some(\"n3\")"]);
        assert_eq!(store.node_down("n3"), 1);
        assert_eq!(via(&store, "a@test"), ["sip:a@1 Some(\"n2\")"]);
        assert!(
            store.expire(at(300)).len() == 3 && take(&mut store).is_empty(),
            "theirs to remove"
        );
        assert!(store.is_empty());
    }
}
