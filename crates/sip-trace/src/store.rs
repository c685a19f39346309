//! [`TraceStore`]: every captured message in arrival order, bounded in
//! bytes and age, with an index from Call-ID to its messages.
//!
//! Why this shape: the hot path (one record per message in and out) must be
//! cheap and bounded, and reads (an operator opening a call) are rare. So
//! messages sit in one queue in the order they were captured; the oldest
//! leaves first, when the budget is spent or it is older than the time kept.
//! The index keeps, per Call-ID, the sequence numbers of its messages in
//! order, so the message leaving the queue is always the first of its
//! Call-ID's list. The index is a `BTreeMap`: lookups cost a few compares,
//! and no Call-ID an attacker picks can degrade it (nor is there a hash
//! seed to read). Every byte held is counted: the message, its Call-ID
//! key, and a fixed overhead per entry, so a flood of tiny messages with
//! fresh Call-IDs cannot grow it past the budget either.

use crate::Captured;
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};

/// Bytes counted per message on top of its own (queue slot, index slot).
const ENTRY_OVERHEAD: usize = 128;
/// Bytes counted per Call-ID on top of its own (tree node share, list).
const KEY_OVERHEAD: usize = 96;

/// How much the store keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceLimits {
    /// Most bytes held (messages, Call-IDs and overheads); the oldest
    /// messages leave to make room.
    pub max_bytes: usize,
    /// Messages older than this (microseconds) leave.
    pub keep_us: i64,
}

impl Default for TraceLimits {
    /// 64 MiB, one hour.
    fn default() -> Self {
        TraceLimits { max_bytes: 64 << 20, keep_us: 3_600_000_000 }
    }
}

/// What the store holds and has let go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceStats {
    /// Messages held.
    pub messages: usize,
    /// Distinct Call-IDs held.
    pub call_ids: usize,
    /// Bytes counted against the budget.
    pub bytes: usize,
    /// Messages let go (budget or age) since the start.
    pub evicted: u64,
}

/// The bounded store of captured messages. One owner (the shell's loop
/// writes; the API reads under the same lock).
#[derive(Debug)]
pub struct TraceStore {
    limits: TraceLimits,
    /// Captured messages, oldest first; `queue[i]` has sequence number
    /// `first_seq + i`.
    queue: VecDeque<Captured>,
    first_seq: u64,
    by_call_id: BTreeMap<Bytes, VecDeque<u64>>,
    bytes: usize,
    evicted: u64,
}

fn entry_cost(c: &Captured) -> usize {
    c.bytes.len() + ENTRY_OVERHEAD
}

fn key_cost(key: &[u8]) -> usize {
    key.len() + KEY_OVERHEAD
}

impl TraceStore {
    /// An empty store with `limits`.
    pub fn new(limits: TraceLimits) -> TraceStore {
        TraceStore {
            limits,
            queue: VecDeque::new(),
            first_seq: 0,
            by_call_id: BTreeMap::new(),
            bytes: 0,
            evicted: 0,
        }
    }

    /// Keeps `c` (its bytes as given: pass a buffer of their own, not a
    /// slice of a larger one, or the larger one stays alive uncounted),
    /// then lets the oldest go until the store is within its limits at
    /// `c.time_us`. A message larger than the whole budget is not kept.
    pub fn record(&mut self, c: Captured) {
        let cost = entry_cost(&c) + key_cost(c.call_id());
        if cost > self.limits.max_bytes {
            self.evicted += 1;
            return;
        }
        let now = c.time_us;
        let seq = self.first_seq + self.queue.len() as u64;
        match self.by_call_id.get_mut(c.call_id()) {
            Some(list) => list.push_back(seq),
            None => {
                self.bytes += key_cost(c.call_id());
                let key = Bytes::copy_from_slice(c.call_id());
                self.by_call_id.insert(key, VecDeque::from([seq]));
            }
        }
        self.bytes += entry_cost(&c);
        self.queue.push_back(c);
        self.expire(now);
    }

    /// Lets go of what is past the budget or older than the time kept at
    /// `now_us`.
    pub fn expire(&mut self, now_us: i64) {
        let oldest_kept = now_us.saturating_sub(self.limits.keep_us);
        while let Some(front) = self.queue.front() {
            if self.bytes <= self.limits.max_bytes && front.time_us >= oldest_kept {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        let Some(c) = self.queue.pop_front() else { return };
        self.bytes -= entry_cost(&c);
        self.first_seq += 1;
        self.evicted += 1;
        if let Some(list) = self.by_call_id.get_mut(c.call_id()) {
            list.pop_front();
            if list.is_empty() {
                self.by_call_id.remove(c.call_id());
                self.bytes -= key_cost(c.call_id());
            }
        }
    }

    /// The messages of these Call-IDs still held at `now_us`, in the order
    /// they were captured (which is time order: the shell captures as it
    /// goes). A Call-ID given twice counts once.
    pub fn messages(&self, call_ids: &[&[u8]], now_us: i64) -> Vec<Captured> {
        let oldest_kept = now_us.saturating_sub(self.limits.keep_us);
        let mut seqs: Vec<u64> = Vec::new();
        let mut seen: Vec<&[u8]> = Vec::new();
        for id in call_ids {
            if seen.contains(id) {
                continue;
            }
            seen.push(id);
            if let Some(list) = self.by_call_id.get(*id) {
                seqs.extend(list.iter().copied());
            }
        }
        seqs.sort_unstable();
        seqs.iter()
            .filter_map(|s| self.queue.get((s - self.first_seq) as usize))
            .filter(|c| c.time_us >= oldest_kept)
            .cloned()
            .collect()
    }

    /// What it holds now.
    pub fn stats(&self) -> TraceStats {
        TraceStats {
            messages: self.queue.len(),
            call_ids: self.by_call_id.len(),
            bytes: self.bytes,
            evicted: self.evicted,
        }
    }

    /// Its limits.
    pub fn limits(&self) -> TraceLimits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Direction;
    use sip_message::Transport;

    fn msg(t: i64, call_id: &str, body_len: usize) -> Captured {
        let mut bytes = format!("OPTIONS x SIP/2.0\r\nCall-ID: {call_id}\r\n\r\n").into_bytes();
        bytes.resize(bytes.len().max(body_len), b'x');
        let bytes = Bytes::from(bytes);
        Captured {
            time_us: t,
            direction: Direction::In,
            transport: Transport::Udp,
            src: "127.0.0.1:5062".parse().expect("addr"),
            dst: "127.0.0.1:5060".parse().expect("addr"),
            call_id_range: crate::call_id_range(&bytes),
            bytes,
        }
    }

    fn times(v: &[Captured]) -> Vec<i64> {
        v.iter().map(|c| c.time_us).collect()
    }

    #[test]
    fn messages_of_a_call_in_capture_order() {
        let mut s = TraceStore::new(TraceLimits::default());
        for (t, id) in [(1, "a"), (2, "b"), (3, "a"), (4, "c"), (5, "b")] {
            s.record(msg(t, id, 10));
        }
        assert_eq!(times(&s.messages(&[b"a"], 5)), [1, 3]);
        assert_eq!(times(&s.messages(&[b"b", b"a", b"b"], 5)), [1, 2, 3, 5]);
        assert!(s.messages(&[b"zz"], 5).is_empty());
        assert_eq!(s.stats().call_ids, 3);
    }

    #[test]
    fn the_oldest_go_first_when_the_budget_is_spent() {
        let per = 100 + ENTRY_OVERHEAD + 1 + KEY_OVERHEAD; // 100-byte messages, 1-byte Call-IDs
        let mut s = TraceStore::new(TraceLimits { max_bytes: 3 * per, keep_us: i64::MAX });
        for t in 0..5 {
            s.record(msg(t, &t.to_string(), 100));
        }
        let st = s.stats();
        assert_eq!((st.messages, st.call_ids, st.evicted), (3, 3, 2));
        assert_eq!(st.bytes, 3 * per);
        assert!(s.messages(&[b"0", b"1"], 5).is_empty());
        assert_eq!(times(&s.messages(&[b"2", b"4"], 5)), [2, 4]);
    }

    #[test]
    fn old_messages_leave_after_the_time_kept() {
        let mut s = TraceStore::new(TraceLimits { max_bytes: 1 << 20, keep_us: 1_000 });
        s.record(msg(0, "a", 10));
        s.record(msg(600, "a", 10));
        // Not yet expired by a write, but a read at 1,500 no longer sees t=0.
        assert_eq!(times(&s.messages(&[b"a"], 1_500)), [600]);
        s.record(msg(1_200, "b", 10));
        assert_eq!(s.stats().messages, 2);
        s.expire(5_000);
        assert_eq!(s.stats(), TraceStats { messages: 0, call_ids: 0, bytes: 0, evicted: 3 });
    }

    #[test]
    fn a_flood_with_fresh_call_ids_stays_within_the_budget() {
        let max = 256 * 1024;
        let mut s = TraceStore::new(TraceLimits { max_bytes: max, keep_us: i64::MAX });
        let mut peak = 0;
        for i in 0..100_000i64 {
            // Tiny messages, each a new (long) Call-ID: the index costs too.
            s.record(msg(i, &format!("{i:0>200}"), 0));
            peak = peak.max(s.stats().bytes);
        }
        assert!(peak <= max, "{peak}");
        assert!(s.stats().call_ids > 100, "{:?}", s.stats());
        assert_eq!(s.stats().call_ids, s.stats().messages);
        // One message over the whole budget is refused, not kept.
        s.record(msg(100_000, "big", max));
        assert_eq!(s.stats().call_ids, s.stats().messages);
        assert!(s.messages(&[b"big"], 100_000).is_empty());
        assert!(s.stats().bytes <= max);
    }
}
