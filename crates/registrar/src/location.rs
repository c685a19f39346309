//! The location service: registered contacts per address-of-record.
//!
//! In memory ([`DashMap`] keyed by AOR `ext@domain`, as made by
//! [`records::Extension::aor`]), with every change also
//! handed to an optional [`BindingPersistence`] (a database writer elsewhere)
//! and [`LocationStore::load`] to restore the bindings at start-up. The TCP
//! connection a binding was registered over is kept here only, in
//! [`Location::conn`]: it is not persisted.

use dashmap::DashMap;
use records::{Binding, Timestamp};
use sip_message::{ConnId, Peer, Transport};
use std::sync::Arc;

/// Receives every binding change, to store it durably. Implementations must
/// not block (queue to a background writer) and must not call back into the
/// [`LocationStore`]: they are called while the AOR is locked, so that
/// changes to one AOR reach them in order.
pub trait BindingPersistence {
    /// A binding was added or refreshed (keyed by `aor` and `contact`).
    fn upsert(&self, b: &Binding);
    /// The binding `contact` of `aor` was removed.
    fn remove(&self, aor: &str, contact: &str);
}

/// A shared persistence sink.
pub type Persistence = Arc<dyn BindingPersistence + Send + Sync>;

/// One registered contact and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The binding (persisted).
    pub binding: Binding,
    /// The TCP connection it was registered over (memory only).
    pub conn: Option<ConnId>,
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
    /// of its REGISTER, over the same TCP connection when there is one (NAT
    /// traversal, RFC 5626 flows).
    pub fn target(&self) -> Peer {
        let transport =
            Transport::from_token(self.binding.transport.as_bytes()).unwrap_or(Transport::Udp);
        Peer {
            transport,
            remote: self.binding.source,
            local: self.binding.local,
            conn: if transport.is_reliable() { self.conn } else { None },
        }
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

/// Registered bindings per AOR. Thread-safe; each AOR is changed atomically.
pub struct LocationStore {
    map: DashMap<String, Vec<Location>>,
    persist: Option<Persistence>,
}

impl std::fmt::Debug for LocationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocationStore")
            .field("aors", &self.map.len())
            .field("persistent", &self.persist.is_some())
            .finish()
    }
}

/// Highest q first; a stable sort, so equal q keeps store order.
pub(crate) fn by_q_desc(v: &mut [Location]) {
    v.sort_by_key(|l| std::cmp::Reverse(l.binding.q));
}

impl LocationStore {
    /// An empty store, persisting changes to `persist` if given.
    pub fn new(persist: Option<Persistence>) -> LocationStore {
        LocationStore { map: DashMap::new(), persist }
    }

    /// Unexpired bindings of `aor`, highest q first (equal q: oldest
    /// registration first).
    pub fn lookup(&self, aor: &str, wall: Timestamp) -> Vec<Binding> {
        self.locations(aor, wall).into_iter().map(|l| l.binding).collect()
    }

    /// Like [`LocationStore::lookup`], with the TCP connection of each.
    pub fn locations(&self, aor: &str, wall: Timestamp) -> Vec<Location> {
        let mut v: Vec<Location> = match self.map.get(aor) {
            Some(list) => list.iter().filter(|l| !l.is_expired(wall)).cloned().collect(),
            None => Vec::new(),
        };
        by_q_desc(&mut v);
        v
    }

    /// Where every unexpired UDP binding is reached (source address, local
    /// address): the targets of NAT keep-alive pings. Deduplicated.
    pub fn udp_targets(&self, wall: Timestamp) -> Vec<Peer> {
        let mut out: Vec<Peer> = Vec::new();
        for entry in self.map.iter() {
            for l in entry.value().iter().filter(|l| !l.is_expired(wall)) {
                let t = l.target();
                if t.transport == Transport::Udp && !out.contains(&t) {
                    out.push(t);
                }
            }
        }
        out
    }

    fn apply_locked(&self, aor: &str, list: &mut Vec<Location>, changes: Vec<Change>) {
        for c in changes {
            match c {
                Change::Upsert(mut loc) => {
                    if loc.binding.aor != aor {
                        loc.binding.aor = aor.to_owned();
                    }
                    if let Some(p) = &self.persist {
                        p.upsert(&loc.binding);
                    }
                    match list.iter_mut().find(|l| l.binding.contact == loc.binding.contact) {
                        Some(slot) => *slot = loc,
                        None => list.push(loc),
                    }
                }
                Change::Remove(contact) => {
                    let before = list.len();
                    list.retain(|l| l.binding.contact != contact);
                    if list.len() != before {
                        if let Some(p) = &self.persist {
                            p.remove(aor, &contact);
                        }
                    }
                }
            }
        }
    }

    /// Applies `changes` to `aor`.
    pub fn apply(&self, aor: &str, changes: Vec<Change>) {
        let r: Result<_, std::convert::Infallible> = self.update(aor, |_| Ok((changes, ())));
        let _ = r;
    }

    /// Atomically reads and changes `aor`: `f` sees its current bindings
    /// (expired ones included) and returns the changes to make, or an error
    /// and nothing changes. Returns the bindings afterwards (expired ones
    /// included, in store order). `f` must not use this store.
    pub fn update<T, E>(
        &self,
        aor: &str,
        f: impl FnOnce(&[Location]) -> Result<(Vec<Change>, T), E>,
    ) -> Result<(Vec<Location>, T), E> {
        let result = {
            let mut entry = self.map.entry(aor.to_owned()).or_default();
            match f(entry.as_slice()) {
                Ok((changes, t)) => {
                    self.apply_locked(aor, entry.value_mut(), changes);
                    Ok((entry.clone(), t))
                }
                Err(e) => Err(e),
            }
        };
        self.map.remove_if(aor, |_, v| v.is_empty());
        result
    }

    /// Removes every binding whose expiry time has passed; returns them.
    pub fn expire(&self, wall: Timestamp) -> Vec<(String, Binding)> {
        let mut gone = Vec::new();
        self.map.retain(|aor, list| {
            list.retain(|l| {
                if l.is_expired(wall) {
                    if let Some(p) = &self.persist {
                        p.remove(aor, &l.binding.contact);
                    }
                    gone.push((aor.clone(), l.binding.clone()));
                    false
                } else {
                    true
                }
            });
            !list.is_empty()
        });
        gone
    }

    /// Removes every binding of `aor` (an extension was deleted); returns them.
    pub fn remove_aor(&self, aor: &str) -> Vec<Binding> {
        let Some((_, list)) = self.map.remove(aor) else { return Vec::new() };
        if let Some(p) = &self.persist {
            for l in &list {
                p.remove(aor, &l.binding.contact);
            }
        }
        list.into_iter().map(|l| l.binding).collect()
    }

    /// Restores bindings read from the database at start-up (not written
    /// back to the persistence sink). A binding with the same AOR and
    /// contact as one already loaded replaces it.
    pub fn load(&self, bindings: Vec<Binding>) {
        for b in bindings {
            let mut list = self.map.entry(b.aor.clone()).or_default();
            let loc = Location { binding: b, conn: None };
            match list.iter_mut().find(|l| l.binding.contact == loc.binding.contact) {
                Some(slot) => *slot = loc,
                None => list.push(loc),
            }
        }
    }

    /// Forgets TCP connection `conn` (it closed): its bindings stay, and
    /// requests to them will need a new connection.
    pub fn connection_closed(&self, conn: ConnId) {
        for mut list in self.map.iter_mut() {
            for l in list.iter_mut().filter(|l| l.conn == Some(conn)) {
                l.conn = None;
            }
        }
    }

    /// Number of bindings (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.map.iter().map(|e| e.value().len()).sum()
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
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl BindingPersistence for Recorder {
        fn upsert(&self, b: &Binding) {
            if let Ok(mut v) = self.0.lock() {
                v.push(format!("upsert {} {} {}", b.aor, b.contact, b.expires_at.micros()));
            }
        }
        fn remove(&self, aor: &str, contact: &str) {
            if let Ok(mut v) = self.0.lock() {
                v.push(format!("remove {aor} {contact}"));
            }
        }
    }

    impl Recorder {
        fn take(&self) -> Vec<String> {
            self.0.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default()
        }
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
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_micros(s * 1_000_000)
    }

    #[test]
    fn persistence_sees_add_refresh_remove_expire() {
        let rec = Arc::new(Recorder::default());
        let store = LocationStore::new(Some(rec.clone()));
        let aor = "a@test";
        let loc = |c: &str, exp| Location { binding: binding(aor, c, 1000, exp), conn: Some(9) };
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
            rec.take(),
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
        let rec = Arc::new(Recorder::default());
        let store = LocationStore::new(Some(rec.clone()));
        store.load(vec![
            binding("a@test", "sip:a@1", 500, 100),
            binding("a@test", "sip:a@2", 1000, 100),
            binding("a@test", "sip:a@3", 800, 10),
            binding("b@test", "sip:b@1", 1000, 100),
        ]);
        assert!(rec.take().is_empty(), "load does not write back");
        let v = store.lookup("a@test", at(20));
        let contacts: Vec<&str> = v.iter().map(|b| b.contact.as_str()).collect();
        assert_eq!(contacts, ["sip:a@2", "sip:a@1"]);
        assert_eq!(store.len(), 4);
        assert_eq!(store.aor_count(), 2);
        assert!(store.lookup("nobody@test", at(0)).is_empty());
        assert_eq!(store.remove_aor("b@test").len(), 1);
        assert_eq!(rec.take(), vec!["remove b@test sip:b@1"]);
    }

    #[test]
    fn update_is_all_or_nothing() {
        let store = LocationStore::new(None);
        let r: Result<(Vec<Location>, ()), &str> = store.update("a@test", |cur| {
            assert!(cur.is_empty());
            Err("no")
        });
        assert!(r.is_err());
        assert_eq!(store.aor_count(), 0, "a failed update leaves no empty entry");
    }

    #[test]
    fn connections_and_targets() {
        let store = LocationStore::new(None);
        let b = binding("a@test", "sip:a@1", 1000, 100);
        store.apply("a@test", vec![Change::Upsert(Location { binding: b, conn: Some(4) })]);
        let l = store.locations("a@test", at(0));
        assert_eq!(l[0].target().conn, Some(4));
        assert_eq!(l[0].target().transport, Transport::Tcp);
        assert_eq!(l[0].expires_in(at(0)), 100);
        assert_eq!(l[0].expires_in(Timestamp::from_micros(99_500_000)), 1);
        store.connection_closed(4);
        assert_eq!(store.locations("a@test", at(0))[0].conn, None);
    }
}
