//! A call's timers: our 2xx retransmitted until its ACK and given up after
//! 64*T1 (RFC 3261 13.3.1.4), reliable provisionals retransmitted until
//! their PRACK (RFC 3262 3), and the CANCEL give-up (in `legs.rs`).

use crate::caller_state::CallerState;
use crate::settings::after;
use crate::state::Side;
use crate::turn::CallTurn;
use crate::{CallEvent, Stateless};

impl CallTurn<'_> {
    /// Every timer of the call due now.
    pub(crate) fn run_timers(&mut self) {
        self.pending_timer(Side::Caller);
        for l in 0..self.call.legs.len() as u32 {
            self.pending_timer(Side::Leg(l));
        }
        self.reliable_timer();
        self.leg_timers();
    }

    /// 2xx retransmission (T1 doubling up to T2) and the 64*T1 ACK give-up.
    fn pending_timer(&mut self, side: Side) {
        let (now, t2) = (self.wire.now, self.wire.settings.cfg.t2);
        let Some(slot) = self.call.pending_mut(side) else { return };
        let Some(p) = slot.as_mut() else { return };
        if p.give_up <= now {
            let hold = slot.take().and_then(|p| p.hold);
            if let Some(h) = hold {
                self.release_held(h, None);
            }
            self.no_ack(side);
            return;
        }
        if let Some(next) = p.next.filter(|n| *n <= now) {
            let again = Stateless { peer: p.peer, message: p.response.clone() };
            self.wire.out.stateless.push_back(again);
            p.interval = p.interval.saturating_mul(2).min(t2);
            let mut n = after(next, p.interval);
            if n <= now {
                n = after(now, p.interval);
            }
            p.next = Some(n);
        }
    }

    /// A side never ACKed our 2xx: both sides get a BYE.
    fn no_ack(&mut self, side: Side) {
        match side {
            Side::Caller => {
                let was_up = match self.call.caller.state() {
                    CallerState::Confirmed => true,
                    CallerState::ByeAfterAck => false,
                    _ => return,
                };
                self.bye_side(Side::Caller);
                if was_up {
                    self.wire.emit(CallEvent::CallerNoAck { call: self.call.id });
                    if let Some(b) = self.call.bridged {
                        self.bye_side(Side::Leg(b));
                    }
                }
            }
            Side::Leg(_) => {
                self.bye_side(side);
                if let Some(o) = self.call.other(side) {
                    self.bye_side(o);
                }
            }
        }
    }

    /// Reliable provisional retransmission (T1 doubling) and the 64*T1
    /// PRACK give-up (RFC 3262 3: the INVITE gets a 5xx).
    fn reliable_timer(&mut self) {
        let (now, key) = (self.wire.now, self.call.caller.key);
        let no_ack = matches!(self.call.caller.state(), CallerState::AnswerHeld(..));
        let Some(rel) = self.call.caller.reliable_mut() else { return };
        let Some(u) = rel.unacked.as_mut() else { return };
        if u.give_up <= now {
            self.caller_lost(Some(500), no_ack);
            return;
        }
        if let Some(next) = u.next.filter(|n| *n <= now) {
            let _ = self.wire.tx.send_response(now, key, u.response.clone());
            u.interval = u.interval.saturating_mul(2);
            let mut n = after(next, u.interval);
            if n <= now {
                n = after(now, u.interval);
            }
            u.next = Some(n);
        }
    }
}
