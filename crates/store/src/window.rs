//! The commit window: what the writer holds until its next commit, with
//! every change of one record coalesced into its latest version.
//!
//! A call rewrites its records 4 to 6 times (created, ringing, answered,
//! ended); inside one window only the last version is written, once.
//! Groupcalls, calls, bindings and hunt memories are kept by key in a
//! [`RecordSet`]; any other write (configuration, deletes) is kept as it
//! came and closes the current set, so that writes to one key are applied
//! in the order they were made. Pure data: no I/O, no clock.

use crate::op::Op;
use records::{Binding, Call, Groupcall, HuntMemoryRecord};
use std::collections::{BTreeMap, VecDeque};
use uuid::Uuid;

/// Latest versions, by key. Ordered maps: statements touch rows in key
/// order, the same order on every writer (no lock-order deadlocks between
/// nodes sharing a database).
#[derive(Debug, Default)]
pub(crate) struct RecordSet {
    pub(crate) groupcalls: BTreeMap<Uuid, Box<Groupcall>>,
    pub(crate) calls: BTreeMap<Uuid, Box<Call>>,
    /// `Some`: upsert; `None`: remove.
    pub(crate) bindings: BTreeMap<(String, String), Option<Box<Binding>>>,
    pub(crate) hunt: BTreeMap<Uuid, Box<HuntMemoryRecord>>,
}

impl RecordSet {
    /// Entries held (each is one row write).
    pub(crate) fn len(&self) -> usize {
        self.groupcalls.len() + self.calls.len() + self.bindings.len() + self.hunt.len()
    }

    /// Each entry as a set of its own (to retry them one by one).
    pub(crate) fn entries(&self) -> Vec<RecordSet> {
        let mut out = Vec::with_capacity(self.len());
        for g in self.groupcalls.values() {
            out.push(RecordSet::single(&Op::UpsertGroupcall(g.clone())));
        }
        for c in self.calls.values() {
            out.push(RecordSet::single(&Op::UpsertCall(c.clone())));
        }
        for ((aor, contact), b) in &self.bindings {
            let op = match b {
                Some(b) => Op::UpsertBinding(b.clone()),
                None => Op::RemoveBinding { aor: aor.clone(), contact: contact.clone() },
            };
            out.push(RecordSet::single(&op));
        }
        for m in self.hunt.values() {
            out.push(RecordSet::single(&Op::UpsertHuntMemory(m.clone())));
        }
        out
    }

    /// A set of the one record write `op` (empty for any other write).
    pub(crate) fn single(op: &Op) -> RecordSet {
        let mut set = RecordSet::default();
        let copy = match op {
            Op::UpsertGroupcall(g) => Op::UpsertGroupcall(g.clone()),
            Op::UpsertCall(c) => Op::UpsertCall(c.clone()),
            Op::UpsertBinding(b) => Op::UpsertBinding(b.clone()),
            Op::RemoveBinding { aor, contact } => {
                Op::RemoveBinding { aor: aor.clone(), contact: contact.clone() }
            }
            Op::UpsertHuntMemory(m) => Op::UpsertHuntMemory(m.clone()),
            _ => return set,
        };
        let _ = set.absorb(copy);
        set
    }

    /// Takes `op` when it is a record write: `Ok(true)` when it replaced a
    /// held version of its record, `Err(op)` when it is not a record write.
    fn absorb(&mut self, op: Op) -> Result<bool, Op> {
        let replaced = match op {
            Op::UpsertGroupcall(g) => self.groupcalls.insert(g.id, g).is_some(),
            Op::UpsertCall(c) => self.calls.insert(c.id, c).is_some(),
            Op::UpsertBinding(b) => {
                self.bindings.insert((b.aor.clone(), b.contact.clone()), Some(b)).is_some()
            }
            Op::RemoveBinding { aor, contact } => {
                self.bindings.insert((aor, contact), None).is_some()
            }
            Op::UpsertHuntMemory(m) => self.hunt.insert(m.group_id, m).is_some(),
            other => return Err(other),
        };
        Ok(replaced)
    }

    /// Splits off the entries past the first `n` (in key order, groupcalls
    /// first) into a new set.
    fn split_off(&mut self, mut n: usize) -> RecordSet {
        fn split<K: Ord + Clone, V>(m: &mut BTreeMap<K, V>, n: &mut usize) -> BTreeMap<K, V> {
            if *n >= m.len() {
                *n -= m.len();
                return BTreeMap::new();
            }
            let key = m.keys().nth(*n).cloned();
            *n = 0;
            key.map_or_else(BTreeMap::new, |k| m.split_off(&k))
        }
        RecordSet {
            groupcalls: split(&mut self.groupcalls, &mut n),
            calls: split(&mut self.calls, &mut n),
            bindings: split(&mut self.bindings, &mut n),
            hunt: split(&mut self.hunt, &mut n),
        }
    }
}

/// One step of a batch, applied in order.
#[derive(Debug)]
pub(crate) enum Step {
    Records(RecordSet),
    Other(Op),
}

impl Step {
    fn len(&self) -> usize {
        match self {
            Step::Records(s) => s.len(),
            Step::Other(_) => 1,
        }
    }
}

/// What the writer holds: steps in order, the last one taking new record
/// writes.
#[derive(Debug, Default)]
pub(crate) struct Window {
    steps: VecDeque<Step>,
    len: usize,
}

/// What [`Window::absorb`] did with a write.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Absorbed {
    /// One more entry to write.
    Added,
    /// It replaced a held version of its record: nothing more to write.
    Coalesced,
}

impl Window {
    /// Entries held (row writes to do).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes a write.
    pub(crate) fn absorb(&mut self, op: Op) -> Absorbed {
        let op = match self.steps.back_mut() {
            Some(Step::Records(set)) => match set.absorb(op) {
                Ok(true) => return Absorbed::Coalesced,
                Ok(false) => {
                    self.len += 1;
                    return Absorbed::Added;
                }
                Err(op) => op,
            },
            _ => op,
        };
        let mut set = RecordSet::default();
        match set.absorb(op) {
            Ok(_) => self.steps.push_back(Step::Records(set)),
            Err(op) => self.steps.push_back(Step::Other(op)),
        }
        self.len += 1;
        Absorbed::Added
    }

    /// The first steps, at most `max` entries (at least one step when not
    /// empty), to commit. Give them back with [`Window::restore`] when the
    /// commit fails.
    pub(crate) fn take(&mut self, max: usize) -> Vec<Step> {
        let mut out = Vec::new();
        let mut budget = max.max(1);
        while let Some(step) = self.steps.pop_front() {
            let n = step.len();
            if n <= budget {
                budget -= n;
                self.len -= n;
                out.push(step);
                if budget == 0 {
                    break;
                }
                continue;
            }
            // Only a record set can be larger than the budget (>= 1).
            match step {
                Step::Records(mut set) => {
                    let rest = set.split_off(budget);
                    self.len -= set.len();
                    out.push(Step::Records(set));
                    self.steps.push_front(Step::Records(rest));
                }
                step => self.steps.push_front(step),
            }
            break;
        }
        out
    }

    /// Puts back what [`Window::take`] took (nothing was absorbed since).
    pub(crate) fn restore(&mut self, steps: Vec<Step>) {
        for step in steps.into_iter().rev() {
            self.len += step.len();
            self.steps.push_front(step);
        }
    }
}

/// Entries in `steps`.
pub(crate) fn entries(steps: &[Step]) -> usize {
    steps.iter().map(Step::len).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use records::{Address, AddressType, Timestamp};

    fn call(id: u128, status: records::CallStatus) -> Op {
        let mut c = records::Call::dialing(
            Uuid::from_u128(id),
            Uuid::nil(),
            Address::new(AddressType::Tel, "+1"),
            Address::new(AddressType::Endpoint, "a@b"),
            Timestamp::from_micros(1),
        );
        c.status = status;
        Op::UpsertCall(Box::new(c))
    }

    fn status_of(step: &Step, id: u128) -> records::CallStatus {
        match step {
            Step::Records(s) => s.calls[&Uuid::from_u128(id)].status,
            Step::Other(op) => panic!("not records: {op:?}"),
        }
    }

    #[test]
    fn a_call_changed_six_times_is_written_once_in_its_last_state() {
        use records::CallStatus::*;
        let mut w = Window::default();
        assert_eq!(w.absorb(call(1, Dialing)), Absorbed::Added);
        for s in [Ringing, Progressing, Terminating, Hangup] {
            assert_eq!(w.absorb(call(1, s)), Absorbed::Coalesced);
        }
        assert_eq!(w.absorb(call(2, Dialing)), Absorbed::Added);
        assert_eq!(w.len(), 2);
        let steps = w.take(100);
        assert!(w.is_empty());
        assert_eq!(steps.len(), 1);
        assert_eq!(status_of(&steps[0], 1), Hangup);
        assert_eq!(status_of(&steps[0], 2), Dialing);
    }

    #[test]
    fn other_writes_keep_their_place() {
        use records::CallStatus::*;
        let mut w = Window::default();
        w.absorb(call(1, Dialing));
        w.absorb(Op::DeleteGroupcall { id: Uuid::from_u128(9), at: Timestamp::from_micros(5) });
        // After the delete: a new set, so the order of writes to one key
        // around it is kept.
        assert_eq!(w.absorb(call(1, Hangup)), Absorbed::Added);
        assert_eq!(w.len(), 3);
        let steps = w.take(10);
        assert_eq!(steps.len(), 3);
        assert_eq!(status_of(&steps[0], 1), Dialing);
        assert!(matches!(steps[1], Step::Other(Op::DeleteGroupcall { .. })));
        assert_eq!(status_of(&steps[2], 1), Hangup);
    }

    #[test]
    fn take_splits_a_large_set_and_restore_puts_it_back() {
        use records::CallStatus::*;
        let mut w = Window::default();
        for i in 0..10 {
            w.absorb(call(i, Dialing));
        }
        w.absorb(Op::RemoveApiKey("h".into()));
        let first = w.take(4);
        assert_eq!(entries(&first), 4);
        assert_eq!(w.len(), 7);
        w.restore(first);
        assert_eq!(w.len(), 11);
        let all = w.take(100);
        assert_eq!(entries(&all), 11);
        // Key order is kept across the split and restore.
        let ids: Vec<Uuid> = match &all[0] {
            Step::Records(s) => s.calls.keys().copied().collect(),
            _ => panic!(),
        };
        assert_eq!(ids.len(), 4);
        assert!(w.is_empty());
    }

    #[test]
    fn binding_remove_replaces_its_upsert() {
        let mut w = Window::default();
        let b = records::Binding {
            aor: "a@t".into(),
            contact: "sip:a".into(),
            instance: None,
            reg_id: None,
            q: 1000,
            expires_at: Timestamp::from_micros(9),
            call_id: "c".into(),
            cseq: 1,
            transport: "UDP".into(),
            source: "127.0.0.1:5060".parse().expect("addr"),
            local: "127.0.0.1:5060".parse().expect("addr"),
            user_agent: String::new(),
            node_id: String::new(),
            conn: None,
            unreachable: false,
        };
        w.absorb(Op::UpsertBinding(Box::new(b)));
        let removed = Op::RemoveBinding { aor: "a@t".into(), contact: "sip:a".into() };
        assert_eq!(w.absorb(removed), Absorbed::Coalesced);
        match &w.take(10)[0] {
            Step::Records(s) => assert!(s.bindings.values().all(Option::is_none)),
            other => panic!("{other:?}"),
        }
    }
}
