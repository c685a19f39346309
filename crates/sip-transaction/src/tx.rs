//! One transaction: the four state machines of RFC 3261 17.1.1, 17.1.2,
//! 17.2.1 and 17.2.2 with the RFC 6026 Accepted states and the RFC 4320
//! rules. Times are nanoseconds since the layer's epoch.

use crate::build::ack_for;
use crate::types::{Config, Error, Event, Transmit, TxKey, TxState};
use sip_message::{Message, Method, Peer};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// "No deadline".
pub(crate) const NEVER: u64 = u64::MAX;

/// Which of the four machines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    InviteClient,
    NonInviteClient,
    InviteServer,
    NonInviteServer,
}

impl Kind {
    pub(crate) fn is_client(self) -> bool {
        matches!(self, Kind::InviteClient | Kind::NonInviteClient)
    }
}

/// What the layer must do with the transaction after an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub(crate) enum Step {
    Keep,
    Terminate,
}

/// Timer values in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timers {
    t1: u64,
    t2: u64,
    t4: u64,
    trying: u64,
    /// RFC 4320: when a client's Timer E reaches T2 (T1 + 2*T1 + ... while
    /// below T2: 3.5 s by default). No 100 to a non-INVITE over UDP before,
    /// and a 100 from the layer then if the TU has not answered.
    nit_trying: u64,
    /// 64*T1: timers B, F, H, J, L, M.
    t64: u64,
    /// Timer D: at least 32 s.
    d: u64,
}

pub(crate) fn dur_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(NEVER - 1)
}

impl Timers {
    pub(crate) fn new(c: &Config) -> Timers {
        const MS: u64 = 1_000_000;
        let t1 = dur_ns(c.t1).max(MS);
        let t64 = t1.saturating_mul(64).min(NEVER - 1);
        let t2 = dur_ns(c.t2).max(MS);
        let (mut nit_trying, mut iv) = (0u64, t1);
        while iv < t2 {
            nit_trying = nit_trying.saturating_add(iv);
            iv = iv.saturating_mul(2);
        }
        Timers {
            t1,
            t2,
            nit_trying,
            t4: dur_ns(c.t4),
            trying: dur_ns(c.trying_delay),
            t64,
            d: t64.max(32_000 * MS),
        }
    }
}

/// The layer's output queues.
#[derive(Debug)]
pub(crate) struct Out {
    pub(crate) transmits: VecDeque<Transmit>,
    pub(crate) events: VecDeque<Event>,
    /// The transaction being driven: the key of what it transmits.
    pub(crate) key: TxKey,
    /// Messages sent again (timers A, E, G; a response re-sent for a
    /// retransmitted request), since the layer was made.
    pub(crate) retransmissions: u64,
}

impl Default for Out {
    fn default() -> Self {
        Out {
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            key: TxKey::new(0, 0),
            retransmissions: 0,
        }
    }
}

fn at(now: u64, d: u64) -> u64 {
    now.saturating_add(d).min(NEVER - 1)
}

/// One transaction's state.
#[derive(Debug)]
pub(crate) struct Tx {
    pub(crate) kind: Kind,
    pub(crate) state: TxState,
    reliable: bool,
    pub(crate) peer: Peer,
    /// The request; dropped once a final response was received or sent
    /// (nothing needs it then: the ACK and last response are kept).
    pub(crate) request: Option<Message>,
    /// Server: the last response sent. INVITE client: the ACK it sent.
    pub(crate) last: Option<Message>,
    /// Its entry in the layer's matching index.
    pub(crate) index: Option<Arc<[u8]>>,
    /// Timer A, E or G.
    retrans_at: u64,
    retrans_iv: u64,
    /// The 100 Trying timer (INVITE: `trying_delay`; non-INVITE: RFC 4320).
    trying_at: u64,
    /// Timer B, D, F, H, I, J, K, L or M: the one that ends this state.
    end_at: u64,
    /// The deadline registered in the layer's timer heap.
    pub(crate) sched: u64,
}

impl Tx {
    /// A client transaction; the layer sends the request once it has a key
    /// ([`Tx::send_request`]).
    pub(crate) fn client(request: Message, peer: Peer, now: u64, t: &Timers) -> Tx {
        let invite = request.method() == Some(&Method::Invite);
        let reliable = peer.transport.is_reliable();
        Tx {
            kind: if invite { Kind::InviteClient } else { Kind::NonInviteClient },
            state: if invite { TxState::Calling } else { TxState::Trying },
            reliable,
            peer,
            request: Some(request),
            last: None,
            index: None,
            retrans_at: if reliable { NEVER } else { at(now, t.t1) },
            retrans_iv: t.t1,
            trying_at: NEVER,
            end_at: at(now, t.t64),
            sched: NEVER,
        }
    }

    /// A server transaction for a new request (not ACK).
    pub(crate) fn server(request: Message, peer: Peer, now: u64, t: &Timers) -> Tx {
        let invite = request.method() == Some(&Method::Invite);
        Tx {
            kind: if invite { Kind::InviteServer } else { Kind::NonInviteServer },
            state: if invite { TxState::Proceeding } else { TxState::Trying },
            reliable: peer.transport.is_reliable(),
            peer,
            request: Some(request),
            last: None,
            index: None,
            retrans_at: NEVER,
            retrans_iv: t.t1,
            trying_at: at(now, if invite { t.trying } else { t.nit_trying }),
            end_at: NEVER,
            sched: NEVER,
        }
    }

    pub(crate) fn next_deadline(&self) -> u64 {
        self.retrans_at.min(self.trying_at).min(self.end_at)
    }

    fn send(&self, message: Message, out: &mut Out) {
        out.transmits.push_back(Transmit { peer: self.peer, message, key: out.key });
    }

    /// Sends the request of a new client transaction.
    pub(crate) fn send_request(&self, out: &mut Out) {
        if let Some(r) = &self.request {
            self.send(r.clone(), out);
        }
    }

    fn resend_last(&self, out: &mut Out) {
        if let Some(m) = &self.last {
            out.retransmissions += 1;
            self.send(m.clone(), out);
        }
    }

    /// Enters a state whose only timer is `wait` (D, I, J, K); zero (a
    /// reliable transport) terminates at once.
    fn wait(&mut self, state: TxState, now: u64, wait: u64) -> Step {
        self.state = state;
        self.request = None;
        self.retrans_at = NEVER;
        self.trying_at = NEVER;
        if wait == 0 {
            self.end_at = NEVER;
            Step::Terminate
        } else {
            self.end_at = at(now, wait);
            Step::Keep
        }
    }

    /// A response matched to this client transaction.
    pub(crate) fn on_response(
        &mut self,
        key: TxKey,
        response: Message,
        peer: Peer,
        now: u64,
        t: &Timers,
        out: &mut Out,
    ) -> Step {
        let Some(code) = response.status() else { return Step::Keep };
        let provisional = code < 200;
        let success = (200..300).contains(&code);
        let up = |response, out: &mut Out| out.events.push_back(Event::Response { key, response });
        match (self.kind, self.state) {
            (Kind::InviteClient, TxState::Calling | TxState::Proceeding) => {
                self.retrans_at = NEVER;
                if provisional {
                    // Timer B only runs in Calling (17.1.1.2).
                    self.state = TxState::Proceeding;
                    self.end_at = NEVER;
                    up(response, out);
                    Step::Keep
                } else if success {
                    // RFC 6026: Accepted, Timer M.
                    self.state = TxState::Accepted;
                    self.request = None;
                    self.end_at = at(now, t.t64);
                    up(response, out);
                    Step::Keep
                } else {
                    if let Some(invite) = &self.request {
                        let ack = ack_for(invite, &response);
                        self.send(ack.clone(), out);
                        self.last = Some(ack);
                    }
                    up(response, out);
                    let d = if self.reliable { 0 } else { t.d };
                    self.wait(TxState::Completed, now, d)
                }
            }
            (Kind::InviteClient, TxState::Completed) => {
                if success {
                    out.events.push_back(Event::Stray { message: response, peer });
                } else if !provisional {
                    self.resend_last(out);
                }
                Step::Keep
            }
            (Kind::InviteClient, TxState::Accepted) => {
                if success {
                    up(response, out);
                }
                Step::Keep
            }
            (Kind::NonInviteClient, TxState::Trying | TxState::Proceeding) => {
                up(response, out);
                if provisional {
                    self.state = TxState::Proceeding;
                    Step::Keep
                } else {
                    let k = if self.reliable { 0 } else { t.t4 };
                    self.wait(TxState::Completed, now, k)
                }
            }
            _ => Step::Keep,
        }
    }

    /// A request matched to this server transaction: a retransmission, or an
    /// ACK for an INVITE transaction.
    pub(crate) fn on_request(
        &mut self,
        request: Message,
        peer: Peer,
        now: u64,
        t: &Timers,
        out: &mut Out,
    ) -> Step {
        let ack = request.method() == Some(&Method::Ack);
        match (self.kind, self.state) {
            (Kind::InviteServer, TxState::Completed) if ack => {
                let i = if self.reliable { 0 } else { t.t4 };
                self.wait(TxState::Confirmed, now, i)
            }
            (Kind::InviteServer, TxState::Confirmed) if ack => Step::Keep,
            (Kind::InviteServer, _) if ack => {
                // RFC 6026: ACKs for a 2xx in Accepted go to the TU.
                out.events.push_back(Event::Stray { message: request, peer });
                Step::Keep
            }
            (Kind::InviteServer, TxState::Proceeding | TxState::Completed)
            | (Kind::NonInviteServer, TxState::Proceeding | TxState::Completed) => {
                self.resend_last(out);
                Step::Keep
            }
            // Trying, Confirmed, Accepted: absorbed.
            _ => Step::Keep,
        }
    }

    /// The TU sends a response on this server transaction.
    pub(crate) fn send_response(
        &mut self,
        response: Message,
        now: u64,
        t: &Timers,
        out: &mut Out,
    ) -> Result<Step, Error> {
        let code = response.status().ok_or(Error::NotAResponse)?;
        let provisional = code < 200;
        match (self.kind, self.state) {
            (Kind::InviteServer, TxState::Proceeding) => {
                self.trying_at = NEVER;
                self.send(response.clone(), out);
                self.last = Some(response);
                if (200..300).contains(&code) {
                    // RFC 6026: Accepted, Timer L.
                    self.state = TxState::Accepted;
                    self.request = None;
                    self.end_at = at(now, t.t64);
                } else if !provisional {
                    self.state = TxState::Completed;
                    self.request = None;
                    if !self.reliable {
                        self.retrans_iv = t.t1;
                        self.retrans_at = at(now, t.t1);
                    }
                    self.end_at = at(now, t.t64);
                }
                Ok(Step::Keep)
            }
            (Kind::InviteServer, TxState::Accepted) if (200..300).contains(&code) => {
                // A 2xx retransmission (or another 2xx) from the TU.
                self.send(response.clone(), out);
                self.last = Some(response);
                Ok(Step::Keep)
            }
            (Kind::NonInviteServer, _) if code == 408 => Err(Error::Forbidden408),
            (Kind::NonInviteServer, _) if code > 100 && provisional => {
                Err(Error::NonInviteProvisional)
            }
            (Kind::NonInviteServer, TxState::Trying | TxState::Proceeding) => {
                // RFC 4320: no 100 to a non-INVITE over an unreliable
                // transport before a client's Timer E reaches T2; the
                // layer sends one itself then.
                if code == 100
                    && self.state == TxState::Trying
                    && !self.reliable
                    && now < self.trying_at
                {
                    return Ok(Step::Keep);
                }
                self.trying_at = NEVER;
                if provisional {
                    self.send(response.clone(), out);
                    self.last = Some(response);
                    self.state = TxState::Proceeding;
                    Ok(Step::Keep)
                } else if self.reliable {
                    // Timer J is zero: nothing will need the response again.
                    self.send(response, out);
                    Ok(self.wait(TxState::Completed, now, 0))
                } else {
                    self.send(response.clone(), out);
                    self.last = Some(response);
                    Ok(self.wait(TxState::Completed, now, t.t64))
                }
            }
            (Kind::InviteServer | Kind::NonInviteServer, state) => Err(Error::InvalidState(state)),
            _ => Err(Error::NotAServerTransaction),
        }
    }

    /// The earliest deadline, `due`, has come.
    pub(crate) fn on_timer(&mut self, key: TxKey, due: u64, t: &Timers, out: &mut Out) -> Step {
        if self.end_at <= due {
            self.end_at = NEVER;
            let timeout = matches!(
                (self.kind, self.state),
                (Kind::InviteClient, TxState::Calling)
                    | (Kind::NonInviteClient, TxState::Trying | TxState::Proceeding)
                    | (Kind::InviteServer, TxState::Completed)
            );
            if timeout {
                out.events.push_back(Event::Timeout { key });
            }
            return Step::Terminate;
        }
        if self.trying_at <= due {
            self.trying_at = NEVER;
            let send = match (self.kind, self.state) {
                (Kind::InviteServer, TxState::Proceeding) => self.last.is_none(),
                (Kind::NonInviteServer, TxState::Trying) => true,
                _ => false,
            };
            if let Some(request) = self.request.as_ref().filter(|_| send) {
                let trying = Message::response_to(request, 100).build();
                self.send(trying.clone(), out);
                self.last = Some(trying);
                if self.kind == Kind::NonInviteServer {
                    self.state = TxState::Proceeding;
                }
            }
        }
        if self.retrans_at <= due {
            let iv = match (self.kind, self.state) {
                // Timer A doubles without a cap (B ends it).
                (Kind::InviteClient, TxState::Calling) => Some(self.retrans_iv.saturating_mul(2)),
                // Timer E doubles up to T2, and is T2 once a 1xx came.
                (Kind::NonInviteClient, TxState::Trying) => {
                    Some(self.retrans_iv.saturating_mul(2).min(t.t2))
                }
                (Kind::NonInviteClient, TxState::Proceeding) => Some(t.t2),
                // Timer G doubles up to T2.
                (Kind::InviteServer, TxState::Completed) => {
                    Some(self.retrans_iv.saturating_mul(2).min(t.t2))
                }
                _ => None,
            };
            match iv {
                Some(iv) => {
                    let m = if self.kind.is_client() {
                        self.request.clone()
                    } else {
                        self.last.clone()
                    };
                    if let Some(m) = m {
                        out.retransmissions += 1;
                        self.send(m, out);
                    }
                    self.retrans_iv = iv;
                    self.retrans_at = at(self.retrans_at, iv);
                }
                None => self.retrans_at = NEVER,
            }
        }
        Step::Keep
    }

    /// The transport failed to send for this transaction (17.1.4, 17.2.4).
    pub(crate) fn on_transport_error(&mut self, key: TxKey, out: &mut Out) -> Step {
        out.events.push_back(Event::TransportError { key });
        if (self.kind, self.state) == (Kind::InviteServer, TxState::Accepted) {
            // The TU's own 2xx retransmission failed; the transaction still
            // absorbs INVITE retransmissions until Timer L.
            Step::Keep
        } else {
            Step::Terminate
        }
    }
}
