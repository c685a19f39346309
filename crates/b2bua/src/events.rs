//! Transaction events into calls, in two steps: [`CallManager::route`]
//! finds what an event is to us (not ours, nothing to do, a request for no
//! dialog, a late 2xx of an ended call's leg, or a [`CallInput`] for one
//! call), then the call takes its input ([`CallTurn::take`]) and is
//! settled.

use crate::manager::CallManager;
use crate::state::{Owner, Role, Side, MAX_FORKS};
use crate::turn::CallTurn;
use crate::CallRef;
use bytes::Bytes;
use sip_message::{Message, Method, Peer};
use sip_transaction::{Event, TransactionLayer, TxKey, TxState};
use std::time::Instant;

/// What a transaction event is to one call.
#[derive(Debug)]
pub(crate) enum CallInput {
    /// A request in one of its dialogs (a To tag of ours).
    Request { side: Side, key: TxKey, request: Message, peer: Peer },
    /// The CANCEL of the caller's INVITE.
    CallerCancel { key: TxKey, request: Message },
    /// A response in a client transaction it owns.
    Response { key: TxKey, role: Role, response: Message },
    /// An ACK, outside transactions, in `side`'s dialog.
    Ack { side: Side, ack: Message },
    /// A 2xx to leg `leg`'s INVITE that came past its transaction.
    Stray2xx { leg: u32, response: Message },
    /// A transaction it owns timed out (`timeout`) or met a transport
    /// error.
    Failed { key: TxKey, role: Role, timeout: bool },
    /// A transaction it owns is gone.
    Terminated { key: TxKey, role: Role },
}

/// What a transaction event is to the manager.
enum Routed {
    /// Not ours: given back to the owner.
    NotOurs(Event),
    /// Ours, with nothing to do.
    Absorbed,
    /// An in-dialog request for no dialog of ours: 481.
    NoDialog { key: TxKey, request: Message },
    /// A response to the INVITE of an answered leg whose call ended.
    Orphan { key: TxKey, response: Message },
    /// For a call.
    Call(CallRef, CallInput),
}

impl CallManager {
    /// Takes a transaction event. Events that belong to calls are consumed
    /// (`None`): responses of our client transactions, the CANCEL of a
    /// caller's INVITE, requests with a To tag (in-dialog; unknown dialogs
    /// get a 481), ACKs and 2xx that come as [`Event::Stray`], timeouts,
    /// transport errors and terminations of our transactions. Every other
    /// event is given back: a new request outside any dialog, a CANCEL of
    /// something else, strays that match no call.
    pub fn handle_event(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        ev: Event,
    ) -> Option<Event> {
        match self.route(ev) {
            Routed::NotOurs(ev) => return Some(ev),
            Routed::Absorbed => {}
            Routed::NoDialog { key, request } => self.split(tx, now).1.reply(key, &request, 481),
            Routed::Orphan { key, response } => self.orphan_response(tx, now, key, &response),
            Routed::Call(c, input) => {
                self.on_call(tx, now, c, |t| t.take(input));
            }
        }
        None
    }

    /// What `ev` is to us. A terminated key of ours is forgotten here.
    fn route(&mut self, ev: Event) -> Routed {
        match ev {
            Event::NewRequest { key, request, peer } => {
                let Some(tag) = request.to_tag() else {
                    return Routed::NotOurs(Event::NewRequest { key, request, peer });
                };
                let found = request.call_id().ok().and_then(|cid| self.index.find_dialog(cid, tag));
                match found {
                    Some((c, side)) => {
                        Routed::Call(c, CallInput::Request { side, key, request, peer })
                    }
                    None => Routed::NoDialog { key, request },
                }
            }
            Event::Cancel { key, request, peer, cancels } => {
                match cancels.and_then(|k| self.index.owner(k)) {
                    Some(Owner::Call(c, Role::CallerInvite)) => {
                        Routed::Call(*c, CallInput::CallerCancel { key, request })
                    }
                    _ => Routed::NotOurs(Event::Cancel { key, request, peer, cancels }),
                }
            }
            Event::Response { key, response } => match self.index.owner(key) {
                None => Routed::NotOurs(Event::Response { key, response }),
                Some(Owner::Detached) => Routed::Absorbed,
                Some(Owner::Orphan(_)) => Routed::Orphan { key, response },
                Some(Owner::Call(c, role)) => {
                    Routed::Call(*c, CallInput::Response { key, role: *role, response })
                }
            },
            Event::Stray { message, peer } => self.route_stray(message, peer),
            Event::Timeout { key } | Event::TransportError { key } => {
                let timeout = matches!(ev, Event::Timeout { .. });
                match self.index.owner(key) {
                    None => Routed::NotOurs(ev),
                    Some(Owner::Call(c, role)) => {
                        Routed::Call(*c, CallInput::Failed { key, role: *role, timeout })
                    }
                    Some(_) => Routed::Absorbed,
                }
            }
            Event::Terminated { key } => match self.index.remove(key) {
                None => Routed::NotOurs(ev),
                Some(Owner::Call(c, role)) => Routed::Call(c, CallInput::Terminated { key, role }),
                Some(_) => Routed::Absorbed,
            },
        }
    }

    /// ACKs (for our 2xx) and 2xx responses to INVITE outside transactions.
    fn route_stray(&self, message: Message, peer: Peer) -> Routed {
        let not_ours = |message, peer| Routed::NotOurs(Event::Stray { message, peer });
        let Ok(cid) = message.call_id() else { return not_ours(message, peer) };
        if message.method() == Some(&Method::Ack) {
            return match message.to_tag().and_then(|t| self.index.find_dialog(cid, t)) {
                Some((c, side)) => Routed::Call(c, CallInput::Ack { side, ack: message }),
                None => not_ours(message, peer),
            };
        }
        let is_2xx_invite = message.status().is_some_and(|s| (200..300).contains(&s))
            && message.cseq().is_ok_and(|c| c.method == Method::Invite);
        if !is_2xx_invite {
            return not_ours(message, peer);
        }
        match message.from_tag().and_then(|t| self.index.find_dialog(cid, t)) {
            Some((c, Side::Leg(leg))) => {
                Routed::Call(c, CallInput::Stray2xx { leg, response: message })
            }
            _ => not_ours(message, peer),
        }
    }

    /// A response to the INVITE of an answered leg whose call ended: a 2xx
    /// retransmission gets our ACK again, another fork's 2xx an ACK and a
    /// BYE.
    fn orphan_response(
        &mut self,
        tx: &mut TransactionLayer,
        now: Instant,
        key: TxKey,
        resp: &Message,
    ) {
        if !resp.status().is_some_and(|s| (200..300).contains(&s)) {
            return;
        }
        let Some(Owner::Orphan(mut o)) = self.index.remove(key) else { return };
        let tag = resp.to_tag().unwrap_or_default();
        let (_, mut wire) = self.split(tx, now);
        if let Some((_, ack)) = o.acks.iter().find(|(t, _)| t == tag) {
            wire.send_stateless(ack);
        } else if o.acks.len() <= MAX_FORKS {
            let ack = wire.kill_fork(&o.template, o.template.invite_seq, resp);
            o.acks.push((Bytes::copy_from_slice(tag), ack));
        }
        self.index.orphan(key, o);
    }
}

impl CallTurn<'_> {
    /// Takes what a transaction event is to the call.
    pub(crate) fn take(&mut self, input: CallInput) {
        match input {
            CallInput::Request { side, key, request, peer } => {
                self.in_dialog(side, key, request, peer)
            }
            CallInput::CallerCancel { key, request } => self.caller_cancel(key, &request),
            CallInput::Response { key, role, response } => self.response(key, role, &response),
            CallInput::Ack { side, ack } => {
                let from_tag = ack.from_tag().unwrap_or_default();
                let remote_ok =
                    self.call.dialog_mut(side).is_some_and(|d| d.remote_tag == from_tag);
                if remote_ok {
                    self.side_ack(side, &ack);
                }
            }
            CallInput::Stray2xx { leg, response } => self.stray_2xx(leg, &response),
            CallInput::Failed { key, role, timeout } => self.transaction_failed(key, role, timeout),
            CallInput::Terminated { key, role } => {
                self.call.keys.retain(|k| *k != key);
                match role {
                    Role::LegInvite(l) if self.call.is_leg_invite(l, key) => self.leg_gave_up(l),
                    Role::Bye(side) => self.bye_done(side, key),
                    Role::RelayClient => self.relay_terminated(key),
                    Role::LegInvite(_) | Role::CallerInvite | Role::RelayServer => {}
                }
            }
        }
    }

    /// A response in a client transaction of the call.
    fn response(&mut self, key: TxKey, role: Role, response: &Message) {
        match role {
            Role::LegInvite(l) => self.leg_response(l, response),
            Role::Bye(side) => {
                if response.status().is_some_and(|s| s >= 200) {
                    self.bye_done(side, key);
                }
            }
            Role::RelayClient => self.relay_response(key, response),
            Role::CallerInvite | Role::RelayServer => {}
        }
    }

    /// A transaction of the call timed out or met a transport error.
    fn transaction_failed(&mut self, key: TxKey, role: Role, timeout: bool) {
        match role {
            // Timer H (no ACK for a failure) needs nothing.
            Role::CallerInvite if !timeout && self.call.caller.is_early() => {
                self.caller_lost(None, false)
            }
            Role::LegInvite(l) if self.call.is_leg_invite(l, key) => self.leg_gave_up(l),
            Role::Bye(side) => self.bye_done(side, key),
            Role::RelayClient => self.relay_failed(key, true),
            // A challenged INVITE, superseded by the one sent with
            // credentials.
            Role::LegInvite(_) | Role::CallerInvite | Role::RelayServer => {}
        }
    }

    /// A 2xx to leg `l`'s INVITE that came past its transaction (its Via
    /// matched none): that transaction will never see a final response now
    /// and, proceeding, has no timer to end it. It ends here (found by
    /// fuzzing).
    fn stray_2xx(&mut self, l: u32, response: &Message) {
        self.leg_2xx(l, response);
        let Some(leg) = self.call.leg(l).filter(|leg| leg.answered().is_some()) else { return };
        let key = leg.invite_key();
        let pending = self
            .wire
            .tx
            .state(key)
            .is_some_and(|s| matches!(s, TxState::Calling | TxState::Proceeding));
        if pending {
            self.wire.tx.terminate(key);
            self.wire.index.remove(key);
            self.call.keys.retain(|k| *k != key);
        }
    }
}
