//! DNS questions in flight: who waits for each answer. The switch never
//! resolves anything itself; it asks the shell ([`crate::Output::Resolve`])
//! and the answer comes back as an input with the same [`QueryId`].

use crate::output::QueryId;
use b2bua::CallRef;
use groupcall::ResolveId;
use std::collections::HashMap;

/// Who asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Waiter {
    /// A destination of a call's fork (`sip:` URI with a host name).
    Destination {
        /// The call.
        call: CallRef,
        /// The fork's question.
        query: ResolveId,
        /// The destination's URI: the Request-URI of every hop found.
        uri: String,
    },
    /// A carrier given by DNS name.
    Carrier {
        /// Its name.
        name: String,
    },
}

/// Questions in flight.
#[derive(Debug, Default)]
pub(crate) struct DnsQueries {
    next: u64,
    waiting: HashMap<QueryId, Waiter>,
}

impl DnsQueries {
    /// A new question for `waiter`.
    pub(crate) fn ask(&mut self, waiter: Waiter) -> QueryId {
        self.next += 1;
        let id = QueryId(self.next);
        self.waiting.insert(id, waiter);
        id
    }

    /// Who waited for `id` (once).
    pub(crate) fn answer(&mut self, id: QueryId) -> Option<Waiter> {
        self.waiting.remove(&id)
    }

    /// Questions in flight.
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }
}
