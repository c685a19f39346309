//! # timer-queue: the one timer mechanism of forkswitch
//!
//! A [`TimerQueue`] is a min-heap of `(deadline, key)` entries. It does not
//! own the deadlines: every state machine that has timers (a transaction, a
//! call's dialogs, a fork, the switch's housekeeping) keeps its own current
//! deadline and, whenever it changes, pushes a new entry. Entries that no
//! longer match their owner's deadline are *stale*: they are skipped when
//! popped and purged in bulk once they outnumber the live owners (lazy
//! deletion, as in most SIP stacks' timer heaps). So rescheduling is one
//! push, cancelling costs nothing, and the heap needs no index.
//!
//! The switch core holds exactly one queue for the whole machine, keyed by
//! what owns each timer; the transaction layer and the B2BUA hold one of
//! their own only when they run alone (their tests and benchmarks).
//!
//! It is sans-IO: time is whatever ordered value the owner uses (an
//! [`std::time::Instant`], or nanoseconds since an epoch); nothing here
//! reads a clock.
#![deny(missing_docs)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A min-heap of `(deadline, key)` with lazy deletion. `T` is the time
/// type, `K` names the owner of a timer.
///
/// ```
/// use timer_queue::TimerQueue;
/// let mut q: TimerQueue<u64, &str> = TimerQueue::new();
/// q.push(30, "b");
/// q.push(10, "a");
/// q.push(20, "a"); // "a" rescheduled: its entry at 10 is now stale
/// let current = |at: u64, k: &str| (k == "a" && at == 20) || (k == "b" && at == 30);
/// q.prune(current);
/// assert_eq!(q.peek(), Some((20, "a")));
/// assert_eq!(q.pop_due(25), Some((20, "a")));
/// assert_eq!(q.pop_due(25), None);
/// ```
#[derive(Debug, Clone)]
pub struct TimerQueue<T, K> {
    heap: BinaryHeap<Reverse<(T, K)>>,
}

impl<T: Ord + Copy, K: Ord + Copy> Default for TimerQueue<T, K> {
    fn default() -> Self {
        TimerQueue::new()
    }
}

impl<T: Ord + Copy, K: Ord + Copy> TimerQueue<T, K> {
    /// An empty queue.
    pub fn new() -> Self {
        TimerQueue { heap: BinaryHeap::new() }
    }

    /// Files a deadline for `key`. An earlier entry of the same key stays
    /// in the heap until popped or purged: the owner tells which is current.
    pub fn push(&mut self, at: T, key: K) {
        self.heap.push(Reverse((at, key)));
    }

    /// The earliest entry (possibly stale: call [`TimerQueue::prune`] first
    /// for an exact answer).
    pub fn peek(&self) -> Option<(T, K)> {
        self.heap.peek().map(|Reverse(e)| *e)
    }

    /// Removes and returns the earliest entry if it is due at `now`
    /// (deadline <= now). The caller checks it against the owner's current
    /// deadline and ignores it when stale.
    pub fn pop_due(&mut self, now: T) -> Option<(T, K)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Pops stale entries off the top, so that [`TimerQueue::peek`] gives
    /// the real next deadline. `is_current(at, key)` says whether an entry
    /// is its owner's current deadline.
    pub fn prune(&mut self, mut is_current: impl FnMut(T, K) -> bool) {
        while let Some(Reverse((at, key))) = self.heap.peek() {
            if is_current(*at, *key) {
                return;
            }
            self.heap.pop();
        }
    }

    /// Drops every stale entry when the heap holds more than twice `live`
    /// entries plus 1,024 (amortised: each purge at least halves the heap).
    pub fn purge_if_bloated(&mut self, live: usize, mut is_current: impl FnMut(T, K) -> bool) {
        if self.heap.len() <= live.saturating_mul(2).saturating_add(1024) {
            return;
        }
        let mut v = std::mem::take(&mut self.heap).into_vec();
        v.retain(|Reverse((at, key))| is_current(*at, *key));
        self.heap = BinaryHeap::from(v);
    }

    /// Entries held, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// `true` when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The size of one entry, for memory accounting.
    pub const fn entry_size() -> usize {
        std::mem::size_of::<Reverse<(T, K)>>()
    }
}

#[cfg(test)]
mod tests {
    use super::TimerQueue;
    use std::collections::HashMap;

    #[test]
    fn earliest_first_and_stale_skipped() {
        let mut q: TimerQueue<u64, u32> = TimerQueue::new();
        let mut owner: HashMap<u32, u64> = HashMap::new();
        for (k, at) in [(1, 50), (2, 10), (3, 30)] {
            owner.insert(k, at);
            q.push(at, k);
        }
        owner.insert(2, 40); // rescheduled later
        q.push(40, 2);
        owner.remove(&3); // cancelled
        let mut fired = Vec::new();
        while let Some((at, k)) = q.pop_due(100) {
            if owner.get(&k) == Some(&at) {
                fired.push((at, k));
            }
        }
        assert_eq!(fired, vec![(40, 2), (50, 1)]);
        assert!(q.is_empty());
    }

    #[test]
    fn prune_and_purge() {
        let mut q: TimerQueue<u64, u32> = TimerQueue::new();
        for i in 0..3000u32 {
            q.push(u64::from(i), i);
        }
        // Only the odd keys are current.
        q.prune(|_, k| k % 2 == 1);
        assert_eq!(q.peek(), Some((1, 1)));
        q.purge_if_bloated(10, |_, k| k % 2 == 1);
        assert_eq!(q.len(), 1500);
        q.purge_if_bloated(1000, |_, _| false);
        assert_eq!(q.len(), 1500, "not bloated: left alone");
        assert_eq!(q.pop_due(0), None);
        assert_eq!(TimerQueue::<u64, u32>::entry_size(), 16);
    }
}
