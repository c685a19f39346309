//! The oracle: it sees every message the switch sends (before loss), every
//! message the switch is given (after loss), every record the switch asks
//! to store and every event, and judges the run by the wire, never by a
//! script of what should have happened:
//!
//! - each caller INVITE gets one final response (retransmissions aside),
//!   at most one 2xx per call, and every started call ends;
//! - answers are set once; every leg dialog the switch received a 2xx for
//!   is ACKed, and every one that is not the bridged one is ACKed then BYEd;
//! - nothing new is sent into a dialog that has ended; no BYE to the
//!   caller before its ACK (RFC 3261 15); CANCEL only after a provisional
//!   and never after the final response (9.1), no re-dial after it;
//! - records only move forward, end in `hangup`, carry the Call-ID of the
//!   wire, and their hangup_by / hangup_reason match what happened on it.
//!
//! Where the wire cannot tell, a check takes every reading the wire allows
//! (weaker, never skipped):
//!
//! - a leg cancelled before it had a provisional response: its CANCEL
//!   waits for one (RFC 3261 9.1) and may never be seen, so a ring timeout
//!   (`local/noanswer`) is also accepted for such a leg; see
//!   [`Oracle::expected_leg`];
//! - an answered call whose caller never ACKed within 64*T1: the switch's
//!   BYE and the caller's may both be the first, so `remote` or `local`
//!   (`normal` either way);
//! - a final response at exactly the overall timeout is taken for it
//!   (`timeout`), any other 480 for a ring timeout (`noanswer`);
//! - lost beyond recovery (Timer B/F of the switch, a 2xx after Timer B,
//!   a callee left ringing that the switch never heard from, a dialog
//!   the switch did BYE): what the RFC allows then is accepted; a relayed
//!   request that timed out at the switch is not counted as a hang-up
//!   signal (it needs seven losses in a row; it would show as a mismatch).

use crate::sim::net::Nanos;
use bytes::Bytes;
use records::{Call, CallStatus, Direction, Groupcall, HangupBy, HangupReason, NIL};
use sip_message::{Message, Method};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use switch::{Event, Persist};
use uuid::Uuid;

/// The order of things at the switch: `input << 20 | n`, where `n` is 0 for
/// what the switch was given in that input and counts its outputs from 1.
type Ord_ = u64;

fn input_of(o: Ord_) -> u64 {
    o >> 20
}

fn digest(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

fn branch_of(m: &Message) -> Bytes {
    m.top_via().ok().and_then(|v| v.branch().map(Bytes::copy_from_slice)).unwrap_or_default()
}

fn tag(t: Option<&[u8]>) -> Bytes {
    t.map(Bytes::copy_from_slice).unwrap_or_default()
}

/// An INVITE transaction the switch was given by a caller.
struct InvTx {
    branch: Bytes,
    initial: bool,
    final_: Option<(u16, Bytes)>,
}

/// The final response to the caller's (served) INVITE.
#[derive(Clone, Debug)]
struct Final {
    ord: Ord_,
    /// It was sent in reaction to a message (not a timer).
    by_message: bool,
    at: Nanos,
    code: u16,
    body: Bytes,
}

/// One caller's Call-ID as seen at the switch.
#[derive(Default)]
struct CallerWire {
    addr: Option<SocketAddr>,
    txs: Vec<InvTx>,
    /// Index of the latest initial INVITE (the one served).
    served: Option<usize>,
    first_recv_at: Nanos,
    final_: Option<Final>,
    /// Our To tag of the 2xx.
    tag: Option<Bytes>,
    ack_at: Option<Nanos>,
    hangup: Option<Ord_>,
    bye_sent: Option<Ord_>,
    end: Option<Ord_>,
    sent: HashSet<u64>,
    /// CSeqs of INVITEs the switch relayed into it.
    invites: Vec<u32>,
}

/// One INVITE transaction (branch) of a leg.
struct LegTx {
    branch: Bytes,
    sent: Ord_,
    sent_at: Nanos,
    first_response_at: Option<Nanos>,
    provisional: Option<Ord_>,
    final_: Option<(Ord_, u16)>,
}

/// A dialog of a leg the switch received a 2xx for.
struct LegDialog {
    tag: Bytes,
    /// CSeqs of INVITEs the switch sent in it (the initial one, relayed
    /// re-INVITEs): their 2xx must be ACKed even after a BYE (13.2.2.4).
    invites: Vec<u32>,
    /// Its 2xx came after Timer B of an INVITE that had heard nothing: the
    /// transaction was gone, and with it (once the call is over) what the
    /// switch knew of the leg. Neither ACK nor BYE is required then; the
    /// callee ends the dialog itself when its 2xx is not ACKed (13.3.1.4).
    late: bool,
    ack: Option<Ord_>,
    bye_sent: Option<Ord_>,
    hangup: Option<Ord_>,
    end: Option<Ord_>,
    sent: HashSet<u64>,
}

/// One leg (Call-ID of an INVITE the switch sent) as seen at the switch.
struct LegWire {
    remote: SocketAddr,
    txs: Vec<LegTx>,
    cancel: Option<Ord_>,
    cancels: HashSet<u64>,
    dialogs: Vec<LegDialog>,
    claimed: bool,
}

impl LegWire {
    /// `true` when, before input `x`, the leg's INVITE transaction of the
    /// time (the last one sent before `x`) had a provisional response:
    /// then a CANCEL goes out at once (RFC 3261 9.1).
    fn provisional_before(&self, x: u64) -> bool {
        self.txs
            .iter()
            .rev()
            .find(|t| input_of(t.sent) < x)
            .is_some_and(|t| t.provisional.is_some_and(|p| input_of(p) < x))
    }

    fn dialog(&mut self, tag: &[u8]) -> Option<&mut LegDialog> {
        self.dialogs.iter_mut().find(|d| d.tag == tag)
    }
}

/// Settings the oracle judges by.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    pub t1: Nanos,
    pub overall_timeout: Nanos,
}

/// See the module documentation.
pub struct Oracle {
    pub switch_addr: SocketAddr,
    rules: Rules,
    pub violations: Vec<String>,
    input: u64,
    out: u64,
    now: Nanos,
    /// The last input that was a message (not a timer).
    message_input: u64,
    callers: HashMap<Bytes, CallerWire>,
    legs: HashMap<Bytes, LegWire>,
    /// The body of each leg 2xx the switch received: (leg Call-ID, tag).
    bodies: HashMap<Bytes, (Bytes, Bytes)>,
    calls: BTreeMap<Uuid, Call>,
    groupcalls: BTreeMap<Uuid, Groupcall>,
    started: Vec<Uuid>,
    ended: HashSet<Uuid>,
    /// Root groupcall -> inbound call.
    roots: HashMap<Uuid, Uuid>,
    /// The input at which an API hangup reached each live inbound call.
    api_hangups: HashMap<Uuid, u64>,
    pub ua_sent: u64,
    pub switch_sent: u64,
    /// A hash of every message sent, in order, with its time and ends: two
    /// runs with the same fingerprint sent the same messages in the same
    /// order.
    pub fingerprint: u64,
    /// `SIM_TRACE=text`: every switch message whose Call-ID contains it.
    trace: Option<String>,
}

/// The first line and the CSeq, tags and branch of `m`, for a trace.
fn summary(m: &Message) -> String {
    let b = m.to_bytes();
    let first = b.split(|&c| c == b'\r').next().unwrap_or_default();
    format!(
        "{} | {} | from-tag {} to-tag {} | {}",
        String::from_utf8_lossy(first),
        m.cseq().map(|c| format!("{} {:?}", c.seq, c.method)).unwrap_or_default(),
        String::from_utf8_lossy(m.from_tag().unwrap_or_default()),
        String::from_utf8_lossy(m.to_tag().unwrap_or_default()),
        String::from_utf8_lossy(&branch_of(m)),
    )
}

impl Oracle {
    pub fn new(switch_addr: SocketAddr, rules: Rules) -> Oracle {
        Oracle {
            switch_addr,
            rules,
            violations: Vec::new(),
            input: 0,
            out: 0,
            now: 0,
            message_input: 0,
            callers: HashMap::new(),
            legs: HashMap::new(),
            bodies: HashMap::new(),
            calls: BTreeMap::new(),
            groupcalls: BTreeMap::new(),
            started: Vec::new(),
            ended: HashSet::new(),
            roots: HashMap::new(),
            api_hangups: HashMap::new(),
            ua_sent: 0,
            switch_sent: 0,
            fingerprint: 0,
            trace: std::env::var("SIM_TRACE").ok(),
        }
    }

    pub fn violation(&mut self, v: String) {
        self.violations.push(format!("t={:.3}s {v}", self.now as f64 / 1e9));
    }

    /// A message a simulated UA sent (before loss).
    pub fn ua_sent(&mut self, from: SocketAddr, to: SocketAddr, bytes: &Bytes) {
        self.ua_sent += 1;
        self.print(from, to, bytes);
        if self.trace.is_some() {
            if let Ok(m) = Message::parse(bytes.clone()) {
                self.trace_msg(&format!("ua {from} sends to"), to, &m);
            }
        }
    }

    /// Folds a message into the run's fingerprint.
    fn print(&mut self, from: SocketAddr, to: SocketAddr, bytes: &Bytes) {
        let mut h = DefaultHasher::new();
        (self.fingerprint, self.now, from, to, &bytes[..]).hash(&mut h);
        self.fingerprint = h.finish();
    }

    /// The switch is about to take an input at `now`.
    pub fn switch_input(&mut self, now: Nanos) {
        self.input += 1;
        self.out = 0;
        self.now = now;
    }

    fn ord_in(&self) -> Ord_ {
        self.input << 20
    }

    fn ord_out(&mut self) -> Ord_ {
        self.out += 1;
        (self.input << 20) | self.out
    }

    fn trace_msg(&self, dir: &str, peer: SocketAddr, m: &Message) {
        let Some(t) = &self.trace else { return };
        let cid = String::from_utf8_lossy(m.call_id().unwrap_or_default()).into_owned();
        if cid.contains(t.as_str()) {
            println!(
                "trace t={:.3} in={} {dir} {peer} {cid}: {}",
                self.now as f64 / 1e9,
                self.input,
                summary(m)
            );
        }
    }

    // ----- what the switch is given ----------------------------------------

    /// A message the switch is given (after loss).
    pub fn switch_received(&mut self, from: SocketAddr, m: &Message) {
        self.message_input = self.input;
        self.trace_msg("<-", from, m);
        let Ok(cid) = m.call_id().map(Bytes::copy_from_slice) else { return };
        let ord = self.ord_in();
        let now = self.now;
        if m.is_request() {
            let initial_invite = m.method() == Some(&Method::Invite) && m.to_tag().is_none();
            if initial_invite && !self.legs.contains_key(&cid) {
                let c = self.callers.entry(cid.clone()).or_default();
                let branch = branch_of(m);
                if !c.txs.iter().any(|t| t.branch == branch) {
                    if c.txs.is_empty() {
                        c.first_recv_at = now;
                    }
                    c.addr = Some(from);
                    c.txs.push(InvTx { branch, initial: true, final_: None });
                    // A new INVITE (after a 407): it is the one served.
                    c.served = Some(c.txs.len() - 1);
                    c.final_ = None;
                    c.tag = None;
                }
                return;
            }
            if let Some(c) = self.callers.get_mut(&cid) {
                return Self::caller_request(c, m, ord, now, self.rules);
            }
            if let Some(l) = self.legs.get_mut(&cid) {
                // A request from a callee: From tag is its dialog tag.
                let from_tag = tag(m.from_tag());
                if let (Some(Method::Bye), Some(d)) = (m.method(), l.dialog(&from_tag)) {
                    d.hangup.get_or_insert(ord);
                    d.end.get_or_insert(ord);
                }
            }
            return;
        }
        if self.callers.contains_key(&cid) {
            let Some(code) = m.status() else { return };
            let method = m.cseq().map(|c| c.method).ok();
            if (code == 481 || code == 408) && method.is_some_and(|me| me != Method::Bye) {
                if let Some(c) = self.callers.get_mut(&cid) {
                    c.hangup.get_or_insert(ord);
                }
            }
            return;
        }
        if self.legs.contains_key(&cid) {
            self.leg_response(&cid, m, ord);
        }
    }

    fn caller_request(c: &mut CallerWire, m: &Message, ord: Ord_, now: Nanos, _r: Rules) {
        match m.method() {
            Some(Method::Invite) => {
                let branch = branch_of(m);
                if !c.txs.iter().any(|t| t.branch == branch) {
                    c.txs.push(InvTx { branch, initial: false, final_: None });
                }
            }
            Some(Method::Ack) => {
                let ok = c.tag.as_deref() == m.to_tag()
                    && c.final_.as_ref().is_some_and(|f| (200..300).contains(&f.code));
                if ok && c.ack_at.is_none() {
                    c.ack_at = Some(now);
                }
            }
            Some(Method::Bye) if c.tag.is_some() && c.tag.as_deref() == m.to_tag() => {
                c.hangup.get_or_insert(ord);
                c.end.get_or_insert(ord);
            }
            _ => {}
        }
    }

    fn leg_response(&mut self, cid: &Bytes, m: &Message, ord: Ord_) {
        let Some(code) = m.status() else { return };
        let Ok(cseq) = m.cseq() else { return };
        let branch = branch_of(m);
        let to_tag = tag(m.to_tag());
        let Some(l) = self.legs.get_mut(cid) else { return };
        if cseq.method != Method::Invite {
            if (code == 481 || code == 408) && !matches!(cseq.method, Method::Bye | Method::Cancel)
            {
                if let Some(d) = l.dialog(&to_tag) {
                    d.hangup.get_or_insert(ord);
                }
            }
            return;
        }
        let Some(t) = l.txs.iter_mut().find(|t| t.branch == branch) else {
            // A relayed re-INVITE's response.
            if code == 481 || code == 408 {
                if let Some(d) = l.dialog(&to_tag) {
                    d.hangup.get_or_insert(ord);
                }
            }
            return;
        };
        // Every response after Timer B (nothing heard within 64*T1) is late.
        let first = *t.first_response_at.get_or_insert(self.now);
        let late = first >= t.sent_at + 64 * self.rules.t1;
        if code < 200 {
            // The transaction layer drops a provisional after the final.
            if t.final_.is_none() {
                t.provisional.get_or_insert(ord);
            }
            return;
        }
        if t.final_.is_none() {
            t.final_ = Some((ord, code));
        }
        if (200..300).contains(&code) && l.dialog(&to_tag).is_none() {
            l.dialogs.push(LegDialog {
                tag: to_tag.clone(),
                invites: vec![cseq.seq],
                late,
                ack: None,
                bye_sent: None,
                hangup: None,
                end: None,
                sent: HashSet::new(),
            });
            self.bodies.insert(m.body_bytes(), (cid.clone(), to_tag));
        }
    }

    // ----- what the switch sends -------------------------------------------

    /// A message the switch sends to `to` (before loss), as `bytes`.
    pub fn switch_sent(&mut self, to: SocketAddr, m: &Message, bytes: &Bytes) {
        self.switch_sent += 1;
        self.print(self.switch_addr, to, bytes);
        self.trace_msg("->", to, m);
        let ord = self.ord_out();
        let Ok(cid) = m.call_id().map(Bytes::copy_from_slice) else { return };
        if self.callers.contains_key(&cid) {
            return self.sent_to_caller(&cid, m, bytes, ord);
        }
        if m.method() == Some(&Method::Invite) && m.to_tag().is_none() {
            let branch = branch_of(m);
            let now = self.now;
            let l = self.legs.entry(cid.clone()).or_insert_with(|| LegWire {
                remote: to,
                txs: Vec::new(),
                cancel: None,
                cancels: HashSet::new(),
                dialogs: Vec::new(),
                claimed: false,
            });
            if !l.txs.iter().any(|t| t.branch == branch) {
                let redial_after_cancel = l.cancel.is_some();
                l.txs.push(LegTx {
                    branch,
                    sent: ord,
                    sent_at: now,
                    first_response_at: None,
                    provisional: None,
                    final_: None,
                });
                if redial_after_cancel {
                    self.violation(format!(
                        "leg {}: a new INVITE after its CANCEL",
                        String::from_utf8_lossy(&cid)
                    ));
                }
            }
            return;
        }
        if self.legs.contains_key(&cid) && m.is_request() {
            self.sent_to_leg(&cid, m, bytes, ord);
        }
    }

    fn sent_to_caller(&mut self, cid: &Bytes, m: &Message, bytes: &Bytes, ord: Ord_) {
        let now = self.now;
        let t64 = 64 * self.rules.t1;
        let mut bad = Vec::new();
        let by_message = self.message_input == self.input;
        let Some(c) = self.callers.get_mut(cid) else { return };
        if let Some(code) = m.status() {
            let is_invite = m.cseq().is_ok_and(|s| s.method == Method::Invite);
            if code < 200 || !is_invite {
                return;
            }
            let branch = branch_of(m);
            let to_tag = tag(m.to_tag());
            let Some(i) = c.txs.iter().position(|t| t.branch == branch) else { return };
            let t = &mut c.txs[i];
            match &t.final_ {
                Some((c0, t0)) if *c0 != code || *t0 != to_tag => bad.push(format!(
                    "caller {}: a second, different final response {code} after {c0}",
                    String::from_utf8_lossy(cid)
                )),
                Some(_) => {}
                None => {
                    t.final_ = Some((code, to_tag.clone()));
                    let initial = t.initial;
                    if initial && (200..300).contains(&code) {
                        if let Some(f) = c.final_.as_ref().filter(|f| (200..300).contains(&f.code))
                        {
                            if c.tag.as_ref() != Some(&to_tag) {
                                bad.push(format!(
                                    "caller {}: two answers (2xx with different tags), first {}",
                                    String::from_utf8_lossy(cid),
                                    f.code
                                ));
                            }
                        }
                    }
                    if Some(i) == c.served && c.final_.is_none() {
                        c.final_ =
                            Some(Final { ord, by_message, at: now, code, body: m.body_bytes() });
                        c.tag = Some(to_tag);
                    }
                }
            }
        } else {
            // A request into the caller's dialog.
            let h = digest(bytes);
            let new = !c.sent.contains(&h);
            let seq = m.cseq().map(|c| c.seq).unwrap_or(0);
            let due_ack = m.method() == Some(&Method::Ack) && c.invites.contains(&seq);
            if m.method() == Some(&Method::Invite) && c.end.is_none() && !c.invites.contains(&seq) {
                c.invites.push(seq);
            }
            if new && c.end.is_some() && !due_ack {
                bad.push(format!(
                    "caller {}: new {} sent into its ended dialog",
                    String::from_utf8_lossy(cid),
                    m.method()
                        .map(|me| String::from_utf8_lossy(me.as_bytes()).into_owned())
                        .unwrap_or_default()
                ));
            }
            if m.method() == Some(&Method::Bye) {
                let answered_at = c.final_.as_ref().map(|f| f.at).unwrap_or(now);
                if new && c.ack_at.is_none() && now < answered_at + t64 {
                    bad.push(format!(
                        "caller {}: BYE before the caller's ACK (RFC 3261 15)",
                        String::from_utf8_lossy(cid)
                    ));
                }
                c.bye_sent.get_or_insert(ord);
                c.end.get_or_insert(ord);
            }
            c.sent.insert(h);
        }
        for b in bad {
            self.violation(b);
        }
    }

    fn sent_to_leg(&mut self, cid: &Bytes, m: &Message, bytes: &Bytes, ord: Ord_) {
        let mut bad = Vec::new();
        let name = String::from_utf8_lossy(cid).into_owned();
        let Some(l) = self.legs.get_mut(cid) else { return };
        let h = digest(bytes);
        match m.method() {
            // A retransmission.
            Some(Method::Cancel) if !l.cancels.insert(h) => {}
            Some(Method::Cancel) => {
                let branch = branch_of(m);
                match l.txs.iter().find(|t| t.branch == branch) {
                    Some(t) if t.final_.is_some() => {
                        bad.push(format!("leg {name}: CANCEL after its final response"))
                    }
                    Some(t) if t.provisional.is_none() => bad.push(format!(
                        "leg {name}: CANCEL before any provisional response (RFC 3261 9.1)"
                    )),
                    Some(_) => {}
                    None => bad.push(format!("leg {name}: CANCEL of an INVITE never sent")),
                }
                l.cancel.get_or_insert(ord);
            }
            Some(method) => {
                let method = method.clone();
                let to_tag = tag(m.to_tag());
                let is_ack = method == Method::Ack;
                let Some(d) = l.dialog(&to_tag) else {
                    // The ACK of a non-2xx final is the transaction's.
                    let non2xx_ack =
                        is_ack && l.txs.iter().any(|t| t.final_.is_some_and(|(_, c)| c >= 300));
                    if !non2xx_ack {
                        bad.push(format!(
                            "leg {name}: {} sent into a dialog the switch never had (tag {})",
                            String::from_utf8_lossy(method.as_bytes()),
                            String::from_utf8_lossy(&to_tag)
                        ));
                    }
                    for b in bad {
                        self.violation(b);
                    }
                    return;
                };
                let new = !d.sent.contains(&h);
                let seq = m.cseq().map(|c| c.seq).unwrap_or(0);
                // The ACK of a 2xx to an INVITE sent before the end is due.
                let due_ack = is_ack && d.invites.contains(&seq);
                if new && d.end.is_some() && !due_ack {
                    bad.push(format!(
                        "leg {name}: new {} sent into its ended dialog",
                        String::from_utf8_lossy(method.as_bytes())
                    ));
                }
                if method == Method::Invite && d.end.is_none() {
                    d.invites.push(seq);
                }
                if is_ack {
                    d.ack.get_or_insert(ord);
                } else if method == Method::Bye {
                    if d.ack.is_none() {
                        bad.push(format!("leg {name}: BYE before the ACK of its 2xx"));
                    }
                    d.bye_sent.get_or_insert(ord);
                    d.end.get_or_insert(ord);
                }
                d.sent.insert(h);
            }
            None => {}
        }
        for b in bad {
            self.violation(b);
        }
    }

    /// An API hangup of `id` (inbound call or root groupcall) is the
    /// switch's input now.
    pub fn api_hangup(&mut self, id: Uuid) {
        let call = self.roots.get(&id).copied().unwrap_or(id);
        if self.started.contains(&call) && !self.ended.contains(&call) {
            self.api_hangups.entry(call).or_insert(self.input);
        }
    }

    // ----- records and events ----------------------------------------------

    /// A record the switch asks to store.
    pub fn persist(&mut self, p: &Persist) {
        match p {
            Persist::Call(c) => {
                let mut bad = None;
                if let Some(prev) = self.calls.get(&c.id) {
                    if prev.status != c.status && !prev.status.can_become(c.status) {
                        bad = Some(format!(
                            "call {}: status {:?} -> {:?}",
                            c.id, prev.status, c.status
                        ));
                    } else if prev.status == CallStatus::Hangup
                        && (c.hangup_by != prev.hangup_by || c.hangup_reason != prev.hangup_reason)
                    {
                        bad = Some(format!(
                            "call {}: hangup changed after the end: {:?}/{:?} -> {:?}/{:?}",
                            c.id, prev.hangup_by, prev.hangup_reason, c.hangup_by, c.hangup_reason
                        ));
                    }
                }
                if let Some(b) = bad {
                    self.violation(b);
                }
                self.calls.insert(c.id, c.clone());
            }
            Persist::Groupcall(g) => {
                let mut bad = None;
                if let Some(prev) = self.groupcalls.get(&g.id) {
                    if g.status < prev.status {
                        bad = Some(format!(
                            "groupcall {}: status {:?} -> {:?}",
                            g.id, prev.status, g.status
                        ));
                    } else if prev.answer_call_id != NIL && g.answer_call_id != prev.answer_call_id
                    {
                        bad = Some(format!(
                            "groupcall {}: answer_call_id {} -> {}",
                            g.id, prev.answer_call_id, g.answer_call_id
                        ));
                    } else if prev.answer_call_id != NIL
                        && g.answer_groupcall_id != prev.answer_groupcall_id
                    {
                        bad = Some(format!("groupcall {}: answer_groupcall_id changed", g.id));
                    }
                }
                if let Some(b) = bad {
                    self.violation(b);
                }
                self.groupcalls.insert(g.id, g.clone());
            }
            Persist::Binding(_)
            | Persist::BindingRemoved { .. }
            | Persist::HuntMemory(_)
            | Persist::Extension(_)
            | Persist::ExtensionRemoved { .. }
            | Persist::RingGroup(_)
            | Persist::RingGroupRemoved { .. } => {}
        }
    }

    /// An event of the switch.
    pub fn event(&mut self, e: &Event) {
        match e {
            Event::CallStarted { call, groupcall } => {
                self.started.push(*call);
                self.roots.insert(*groupcall, *call);
            }
            Event::CallEnded { call }
                if !self.started.contains(call) || !self.ended.insert(*call) =>
            {
                self.violation(format!("call {call} ended without starting, or twice"));
            }
            Event::Dropped { peer, reason } => {
                self.violation(format!("the switch dropped a message from {peer}: {reason}"))
            }
            Event::Security(ev) => self.violation(format!("security event: {ev:?}")),
            _ => {}
        }
    }

    // ----- the end of the run -----------------------------------------------

    /// `true` when a callee may legitimately be left with dialog
    /// (`call_id`, callee tag) or, with an empty tag, a ringing INVITE:
    /// the switch sent a BYE into that dialog (then lost), or a CANCEL for
    /// that INVITE; or it never heard a provisional response to it, so
    /// could not CANCEL it (RFC 3261 9.1) and gave it up (Timer B).
    pub fn switch_tried_to_end(&self, call_id: &[u8], callee_tag: &[u8]) -> bool {
        let Some(l) = self.legs.get(call_id) else { return false };
        if callee_tag.is_empty() {
            let unheard = l.txs.last().is_some_and(|t| t.provisional.is_none());
            return l.cancel.is_some() || unheard;
        }
        l.dialogs.iter().any(|d| d.tag == callee_tag && d.bye_sent.is_some())
    }

    /// `true` when the switch sent a BYE to this caller.
    pub fn switch_byed_caller(&self, call_id: &[u8]) -> bool {
        self.callers.get(call_id).is_some_and(|c| c.bye_sent.is_some())
    }

    /// What the run exercised, counted from the wire.
    pub fn coverage(&self) -> BTreeMap<String, u64> {
        let mut c = BTreeMap::new();
        let mut add = |k: &str, n: usize| *c.entry(k.to_owned()).or_insert(0) += n as u64;
        for w in self.callers.values() {
            add("caller calls", 1);
            add("caller re-INVITEs", w.txs.iter().filter(|t| !t.initial).count());
            add("caller 407 challenges", w.txs.iter().filter(|t| t.initial).count() - 1);
            if let Some(f) = &w.final_ {
                add(&format!("caller final {}", f.code / 100 * 100), 1);
                if f.code == 487 {
                    add("caller final 487 (CANCEL)", 1);
                }
            }
            add("caller BYEs before the switch's", usize::from(w.hangup.is_some()));
            add("callee re-INVITEs relayed to the caller", w.invites.len());
        }
        for l in self.legs.values() {
            add("legs", 1);
            add("leg trunk challenges", l.txs.len() - 1);
            add("leg CANCELs", usize::from(l.cancel.is_some()));
            add("leg answered dialogs", l.dialogs.len());
            add("legs answered twice (forks)", usize::from(l.dialogs.len() > 1));
            add(
                "leg dialogs ACKed and BYEd",
                l.dialogs.iter().filter(|d| d.bye_sent.is_some()).count(),
            );
            add(
                "leg dialogs hung up by the callee",
                l.dialogs.iter().filter(|d| d.hangup.is_some()).count(),
            );
            let silent = l.txs.last().is_some_and(|t| t.first_response_at.is_none());
            add("legs without any response", usize::from(silent));
        }
        c
    }

    /// Every check that needs the whole run.
    pub fn finish(&mut self) {
        let mut bad = Vec::new();
        for id in &self.started {
            if !self.ended.contains(id) {
                let cid = self.calls.get(id).map(|c| c.sip_call_id.clone()).unwrap_or_default();
                bad.push(format!("call {id} (caller {cid}) never ended (no CallEnded)"));
            }
        }
        for c in self.calls.values() {
            if c.status != CallStatus::Hangup {
                bad.push(format!("call record {} ends {:?}", c.id, c.status));
            }
        }
        for g in self.groupcalls.values() {
            if g.status != records::GroupcallStatus::Hangup {
                bad.push(format!("groupcall record {} ends {:?}", g.id, g.status));
            }
        }
        let mut callers: Vec<(&Bytes, &CallerWire)> = self.callers.iter().collect();
        callers.sort_by(|a, b| a.0.cmp(b.0));
        for (cid, c) in callers {
            for t in &c.txs {
                if t.final_.is_none() {
                    bad.push(format!(
                        "caller {}: an INVITE the switch received never got a final response",
                        String::from_utf8_lossy(cid)
                    ));
                }
            }
        }
        let inbound: Vec<Call> =
            self.calls.values().filter(|c| c.direction == Direction::Incoming).cloned().collect();
        let mut legs: HashMap<Uuid, Vec<Call>> = HashMap::new();
        for c in self.calls.values().filter(|c| c.direction == Direction::Outgoing) {
            if let Some(root) = self.root_of(c.groupcall_id) {
                legs.entry(root).or_default().push(c.clone());
            }
        }
        for call in &inbound {
            bad.extend(self.judge_call(call, &mut legs));
        }
        let mut unclaimed: Vec<(&Bytes, SocketAddr)> =
            self.legs.iter().filter(|(_, l)| !l.claimed).map(|(c, l)| (c, l.remote)).collect();
        unclaimed.sort();
        for (cid, to) in unclaimed {
            bad.push(format!("leg {} to {to} has no call record", String::from_utf8_lossy(cid)));
        }
        for b in bad {
            self.violation(b);
        }
    }

    /// The leg dialog the caller's 2xx bridged (by its body).
    fn bridged(&self, f: &Final) -> Option<(Bytes, Bytes)> {
        self.bodies.get(&f.body).cloned()
    }

    fn judge_call(&mut self, inbound: &Call, legs: &mut HashMap<Uuid, Vec<Call>>) -> Vec<String> {
        let mut bad = Vec::new();
        let cid = Bytes::from(inbound.sip_call_id.clone());
        let Some(c) = self.callers.get(&cid) else {
            return vec![format!(
                "inbound call {}: sip_call_id {:?} is no caller's Call-ID",
                inbound.id, inbound.sip_call_id
            )];
        };
        let Some(f) = c.final_.clone() else {
            return vec![format!("inbound call {}: no final response", inbound.id)];
        };
        let (start_at, ack_at) = (c.first_recv_at, c.ack_at);
        // An API hangup is the operator's: the switch hangs up (local).
        let api = self.api_hangups.get(&inbound.id).map(|&i| i << 20);
        let caller_hangup = c.hangup;
        let answered = (200..300).contains(&f.code);
        let bridged = if answered { self.bridged(&f) } else { None };
        if answered && bridged.is_none() {
            bad.push(format!(
                "inbound call {}: the 2xx to the caller carries no leg's answer",
                inbound.id
            ));
        }
        // The leg side's hang-up of the bridged dialog.
        let leg_dialog = bridged.as_ref().and_then(|(lc, t)| {
            self.legs.get(lc).and_then(|l| l.dialogs.iter().find(|d| d.tag == *t))
        });
        let leg_hangup = leg_dialog.and_then(|d| d.hangup);
        let leg_bye_sent = leg_dialog.and_then(|d| d.bye_sent);
        // Expected hangup of the inbound record.
        let want: Vec<(HangupBy, HangupReason)> = if !answered {
            if api.is_some_and(|a| input_of(a) == input_of(f.ord)) {
                vec![(HangupBy::Local, HangupReason::Cancel)]
            } else if f.code == 487 {
                vec![(HangupBy::Remote, HangupReason::Cancel)]
            } else {
                vec![(HangupBy::Local, HangupReason::for_status(f.code))]
            }
        } else {
            let t64 = 64 * self.rules.t1;
            let no_ack_at = match ack_at {
                Some(a) if a <= f.at + t64 => None,
                _ => Some(f.at + t64),
            };
            let first = |a: Option<Ord_>, b: Option<Ord_>| match (a, b) {
                (Some(x), Some(y)) => Some(x < y),
                (Some(_), None) => Some(true),
                (None, Some(_)) => Some(false),
                (None, None) => None,
            };
            // The leg's hang-up (or the API's) first: we BYE the caller
            // (local); the caller's first (or its missing ACK): remote.
            let local_first = match (leg_hangup, api) {
                (Some(l), Some(a)) => Some(l.min(a)),
                (l, a) => l.or(a),
            };
            match first(local_first, caller_hangup) {
                Some(true) if no_ack_at.is_none() => vec![(HangupBy::Local, HangupReason::Normal)],
                Some(false) if no_ack_at.is_none() => {
                    vec![(HangupBy::Remote, HangupReason::Normal)]
                }
                // Timings against the no-ACK give-up: either.
                _ => vec![
                    (HangupBy::Remote, HangupReason::Normal),
                    (HangupBy::Local, HangupReason::Normal),
                ],
            }
        };
        if !want.contains(&(inbound.hangup_by, inbound.hangup_reason)) {
            bad.push(format!(
                "inbound call {}: hangup {:?}/{:?}, the wire says {:?} (final {})",
                inbound.id, inbound.hangup_by, inbound.hangup_reason, want, f.code
            ));
        }
        // The root groupcall and its answer.
        let root = self
            .groupcalls
            .values()
            .find(|g| g.master_call_id == inbound.id && g.master_groupcall_id == NIL)
            .cloned();
        let Some(root) = root else {
            bad.push(format!("inbound call {}: no root groupcall", inbound.id));
            return bad;
        };
        if answered != (root.answer_call_id != NIL) {
            bad.push(format!(
                "groupcall {}: answer_call_id {} but the caller got {}",
                root.id, root.answer_call_id, f.code
            ));
        }
        if let (Some((lc, _)), true) = (&bridged, root.answer_call_id != NIL) {
            let rec = self.calls.get(&root.answer_call_id);
            if rec.map(|r| r.sip_call_id.as_bytes()) != Some(&lc[..]) {
                bad.push(format!(
                    "groupcall {}: the answer's record {} is not the leg whose 2xx the caller got ({})",
                    root.id,
                    root.answer_call_id,
                    String::from_utf8_lossy(lc)
                ));
            }
        }
        // Every leg of the call.
        for leg in legs.remove(&root.id).unwrap_or_default() {
            bad.extend(self.judge_leg(
                &leg,
                &f,
                start_at,
                bridged.as_ref(),
                (leg_hangup, leg_bye_sent),
            ));
        }
        bad
    }

    fn root_of(&self, mut g: Uuid) -> Option<Uuid> {
        for _ in 0..16 {
            let gc = self.groupcalls.get(&g)?;
            if gc.master_groupcall_id == NIL {
                return Some(gc.id);
            }
            g = gc.master_groupcall_id;
        }
        None
    }

    fn judge_leg(
        &mut self,
        leg: &Call,
        f: &Final,
        start_at: Nanos,
        bridged: Option<&(Bytes, Bytes)>,
        (leg_hangup, leg_bye_sent): (Option<Ord_>, Option<Ord_>),
    ) -> Vec<String> {
        let mut bad = Vec::new();
        let cid = Bytes::from(leg.sip_call_id.clone());
        let rules = self.rules;
        let Some(l) = self.legs.get_mut(&cid) else {
            return vec![format!(
                "leg record {}: sip_call_id {:?} is no INVITE the switch sent",
                leg.id, leg.sip_call_id
            )];
        };
        if l.claimed {
            bad.push(format!("leg {}: two call records claim it", leg.sip_call_id));
        }
        l.claimed = true;
        let is_bridged = bridged.is_some_and(|(lc, _)| *lc == cid);
        // ACK, and for every dialog but the bridged one a BYE after it.
        for d in &l.dialogs {
            let this_bridged = bridged.is_some_and(|(lc, t)| *lc == cid && *t == d.tag);
            match (d.ack, d.bye_sent) {
                _ if d.late && d.ack.is_none() => {}
                (None, _) => bad.push(format!(
                    "leg {}: its 2xx (tag {}) was never ACKed",
                    leg.sip_call_id,
                    String::from_utf8_lossy(&d.tag)
                )),
                (Some(_), None) if !this_bridged => bad.push(format!(
                    "leg {}: answered (tag {}) but not the answer, and never BYEd",
                    leg.sip_call_id,
                    String::from_utf8_lossy(&d.tag)
                )),
                (Some(a), Some(b)) if b < a => {
                    bad.push(format!("leg {}: BYE before ACK", leg.sip_call_id))
                }
                _ => {}
            }
        }
        let got = (leg.hangup_by, leg.hangup_reason);
        let want = if is_bridged {
            let remote = match (leg_hangup, leg_bye_sent) {
                (Some(h), Some(b)) => h < b,
                (Some(_), None) => true,
                (None, _) => false,
            };
            let by = if remote { HangupBy::Remote } else { HangupBy::Local };
            vec![(by, HangupReason::Normal)]
        } else {
            Self::expected_leg(l, f, start_at, rules)
        };
        if !want.contains(&got) {
            bad.push(format!(
                "leg record {} ({}): hangup {:?}/{:?}, the wire says {:?} (caller final {} at {:.3}s, call from {:.3}s)",
                leg.id, leg.sip_call_id, got.0, got.1, want, f.code, f.at as f64 / 1e9, start_at as f64 / 1e9
            ));
        }
        bad
    }

    /// What a leg that is not the answer may be recorded with, from the
    /// wire. The switch cancels a leg either before the caller's final
    /// response (only a ring timeout does that) or in the input that sent
    /// it (an answer elsewhere, the caller's CANCEL, a 6xx: `cancel`; the
    /// overall timeout: `timeout`). Its CANCEL is on the wire at once when
    /// the leg had a provisional, else it waits for one (RFC 3261 9.1), so
    /// a leg without a provisional may have been cancelled unseen: then a
    /// ring timeout (`noanswer`) is also possible.
    fn expected_leg(
        l: &LegWire,
        f: &Final,
        start_at: Nanos,
        rules: Rules,
    ) -> Vec<(HangupBy, HangupReason)> {
        use HangupBy::{Local, Remote};
        use HangupReason::*;
        let f_in = input_of(f.ord);
        let overall = f.at == start_at + rules.overall_timeout;
        let cause: Vec<HangupReason> = match f.code {
            200..=299 | 487 | 600..=699 => vec![Cancel],
            480 if overall => vec![Timeout],
            480 => vec![Noanswer],
            _ => vec![],
        };
        let prov_before = |x: u64| l.provisional_before(x);
        let mut local: Vec<HangupReason> = Vec::new();
        let mut own: Vec<(HangupBy, HangupReason)> = Vec::new();
        if let Some(c) = l.cancel {
            let c_in = input_of(c);
            if c_in < f_in {
                local.push(Noanswer);
            } else if c_in == f_in {
                // A timer input may also have run a ring timeout.
                local.extend(&cause);
                if !f.by_message {
                    local.push(Noanswer);
                }
            } else {
                local.extend(&cause);
                if !prov_before(f_in) {
                    local.push(Noanswer);
                }
            }
        } else {
            let last = l.txs.last();
            let e = last.and_then(|t| t.final_);
            // Timer B: no response at all 64*T1 after the INVITE (a late
            // final finds no transaction).
            let timer_b = last.and_then(|t| {
                let tb = t.sent_at + 64 * rules.t1;
                t.first_response_at.is_none_or(|r| r >= tb).then_some(tb)
            });
            let e = if timer_b.is_some() { Option::None } else { e };
            let timer_b = timer_b.filter(|&tb| tb <= f.at);
            match (e, timer_b) {
                (Some((e_ord, code)), _) if input_of(e_ord) <= f_in => {
                    // Its own final came first (a 2xx then would have won).
                    if !(200..300).contains(&code) {
                        own.push((Remote, HangupReason::for_status(code)));
                        if !prov_before(input_of(e_ord)) {
                            local.push(Noanswer);
                        }
                    }
                }
                (Option::None, Some(_)) => {
                    own.push((Local, HangupReason::for_status(records::NO_RESPONSE)));
                    local.push(Noanswer);
                }
                _ => {
                    // Live at the final (or cancelled unseen before): it
                    // was cancelled, and with a provisional that CANCEL
                    // would be on the wire.
                    if !prov_before(f_in) {
                        local.extend(&cause);
                        local.push(Noanswer);
                    }
                }
            }
        }
        own.extend(local.into_iter().map(|r| (Local, r)));
        own
    }
}
