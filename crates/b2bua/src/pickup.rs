//! Call pickup (group, directed, or by `Replaces`): another phone's INVITE
//! becomes the answered leg of a ringing call. The phone's INVITE is
//! answered at once with our 2xx, retransmitted until its ACK like any 2xx
//! of ours; the owner then answers the caller with that leg
//! ([`crate::CallManager::answer_caller`]) and cancels the legs still
//! ringing.
//!
//! Offer and answer (RFC 3264): both INVITEs carry an offer, and neither
//! side can be asked for an answer before its 2xx. The caller's 200 carries
//! the picking phone's session description and the picking phone's 200
//! the caller's: each side gets the other's media address and codecs. A
//! call whose caller made no offer, or a pickup INVITE without one, is
//! refused (the owner answers 488).

use crate::dialog::{Body, Dialog, LegTemplate};
use crate::leg_state::{Answered, Leg, LegAck};
use crate::state::{Origin, Side, MAX_LEGS};
use crate::turn::CallTurn;
use crate::{B2buaError, LegRef};
use sip_message::{HeaderName, Message, Peer};
use sip_transaction::TxKey;

/// A phone's INVITE that picks up a ringing call, with its server
/// transaction (no final response sent yet).
#[derive(Debug)]
pub struct PickupInvite {
    /// The INVITE's server transaction.
    pub key: TxKey,
    /// The INVITE.
    pub request: Message,
    /// Where it came from.
    pub peer: Peer,
}

const NOT_RINGING: B2buaError = B2buaError::InvalidState("the call is not ringing");

impl CallTurn<'_> {
    /// The picker's INVITE becomes leg `LegRef`, answered with a 200 that
    /// carries the caller's offer; its own offer waits for the caller's
    /// 200. The call must be ringing (inbound caller, no final response).
    pub(crate) fn pick_up(&mut self, p: &PickupInvite) -> Result<LegRef, B2buaError> {
        if self.call.origin != Origin::Inbound || !self.call.caller.is_proceeding() {
            return Err(NOT_RINGING);
        }
        if self.call.legs.len() >= MAX_LEGS {
            return Err(B2buaError::TooManyLegs(MAX_LEGS));
        }
        let offer = self.call.caller.offer.sdp().cloned().ok_or(B2buaError::NoOffer)?;
        let theirs = self.wire.settings.cfg.limits.body(&p.request).ok_or(B2buaError::NoOffer)?;
        let l =
            u32::try_from(self.call.legs.len()).map_err(|_| B2buaError::TooManyLegs(MAX_LEGS))?;
        let tag = self.wire.tokens.token(10);
        let dialog = Dialog::uas(&p.request, tag.clone(), p.peer);
        let template = LegTemplate {
            call_id: dialog.call_id.clone(),
            local_tag: tag.clone(),
            local: dialog.local.clone(),
            request_uri: dialog.remote_target.clone(),
            peer: p.peer,
            invite_seq: 0,
        };
        let ok = self.picker_ok(&p.request, &tag, &p.peer, offer);
        self.wire.respond(p.key, ok.clone());
        self.wire.index.detach(p.key);
        let cseq = p.request.cseq().ok().map(|c| c.seq).unwrap_or_default();
        let pending = Some(self.pending_2xx(ok, p.peer, cseq, None));
        self.wire.index.add_dialog(&dialog.call_id, &tag, self.call.id, Side::Leg(l));
        let answered = Answered { dialog, ack: LegAck::Theirs, answer: Some(theirs), pending };
        self.call.legs.push(Leg::picked(template, p.key, answered));
        Ok(LegRef(l))
    }

    /// Our 200 to the picker's INVITE, with our tag, Contact, Allow and
    /// the caller's offer.
    fn picker_ok(&self, invite: &Message, tag: &[u8], peer: &Peer, offer: Body) -> Message {
        let settings = self.wire.settings;
        let tag = std::str::from_utf8(tag).unwrap_or_default();
        settings
            .response(invite, 200)
            .to_tag(tag)
            .header(HeaderName::Contact, settings.contact(peer))
            .header(HeaderName::Allow, settings.allow.clone())
            .body(offer.ctype, offer.bytes)
            .build()
    }
}
