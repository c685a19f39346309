//! An INVITE outside any dialog: who calls (carrier by source, or an
//! extension by digest), where it goes (routing), and the fork that serves
//! it, with the inbound call's record.

use crate::caller::{self, CallerId, Identified, Refusal};
use crate::calls::ForkedCall;
use crate::dialer::CallDirectory;
use crate::input::Now;
use crate::output::{Event, Output, Persist};
use crate::switch::Switch;
use b2bua::limits::Copied;
use bytes::Bytes;
use groupcall::{Destination, Fork, GroupDef, GroupSpec};
use rand::{Rng, RngCore};
use records::{Address, AddressType, Call, RingMethod, NIL};
use routing::{CarrierTarget, Decision};
use sip_message::{HeaderName, Message, Peer};
use sip_transaction::TxKey;
use tracing::debug;
use uuid::Uuid;

/// A routed INVITE: what to ring and what was dialed.
struct Routed {
    group: GroupDef,
    dialed: Address,
    /// Carrier targets routing found for a PSTN number (used once).
    carriers: Option<(String, Vec<CarrierTarget>)>,
}

impl Switch {
    /// A new record id.
    pub(crate) fn new_id(&mut self) -> Uuid {
        uuid::Builder::from_random_bytes(self.rng.gen()).into_uuid()
    }

    /// A new INVITE outside any dialog: identify the caller, route, fork.
    pub(crate) fn invite(&mut self, now: Now, key: TxKey, req: Message, peer: Peer) {
        if req.max_forwards().ok().flatten() == Some(0) {
            let resp = self.local.status(&req, 483);
            return self.respond(now, key, resp);
        }
        let screening = self.limits.screen(&req, Copied::Invite);
        for n in screening.notices(peer, Some(&sip_message::Method::Invite)) {
            self.out.push_back(Output::Event(Event::Oversize(n)));
        }
        if let Some((code, _)) = screening.refused {
            let resp = self.local.status(&req, code);
            return self.respond(now, key, resp);
        }
        let who = match caller::identify(&mut self.registrar, &self.routes, now.at, &req, &peer) {
            Ok(who) => who,
            Err(refusal) => return self.refuse(now, key, &req, &peer, refusal),
        };
        let routed = match self.route(&req, &who) {
            Ok(r) => r,
            Err(code) => {
                let resp = self.local.status(&req, code);
                return self.respond(now, key, resp);
            }
        };
        match self.fork_for(now, &req, &peer, &who, routed) {
            Ok((fork, inbound, from)) => {
                let cref = self.b2bua.accept_inbound(key, req, peer);
                self.counters.calls_started += 1;
                let mut call = ForkedCall::new(cref, fork, inbound, from, now.at);
                if call.inbound.source.kind == AddressType::Endpoint {
                    let aor = call.inbound.source.target.clone();
                    call.occupy(&mut self.occupancy, &aor);
                }
                self.calls.insert(call);
                self.run_call(now, cref);
            }
            Err(code) => {
                let resp = self.local.status(&req, code);
                self.respond(now, key, resp);
            }
        }
    }

    /// Where the INVITE goes: the group to ring, what was dialed (for the
    /// inbound record), and the carrier targets routing already found for a
    /// PSTN number. `Err` is the status to answer.
    fn route(&mut self, req: &Message, who: &Identified) -> Result<Routed, u16> {
        let user = match req.request_uri() {
            Some(Ok(u)) => match u.scheme {
                sip_message::Scheme::Tel => u.phone_digits().unwrap_or_default(),
                _ => u.user.map(|u| String::from_utf8_lossy(u).into_owned()).unwrap_or_default(),
            },
            _ => String::new(),
        };
        let accounts = self.registrar.accounts();
        let decision =
            self.routes.route(&who.caller, &user, |n, d| accounts.extension(n, d).is_some());
        Ok(match decision {
            Decision::Extension { aor } => {
                let dest = Address::new(AddressType::Endpoint, aor);
                Routed { group: self.single(dest.clone()), dialed: dest, carriers: None }
            }
            Decision::Group(g) => Routed {
                group: GroupDef::from(&*g),
                dialed: Address::new(AddressType::Groupcall, format!("{}@{}", g.number, g.domain)),
                carriers: None,
            },
            Decision::Tel { number, targets } => {
                let dest = Address::new(AddressType::Tel, number.clone());
                Routed {
                    group: self.single(dest.clone()),
                    dialed: dest,
                    carriers: Some((number, targets)),
                }
            }
            Decision::NotFound | Decision::AuthRequired => return Err(404),
            Decision::Forbidden => return Err(403),
        })
    }

    /// The fork serving a routed INVITE, the inbound call record (queued
    /// for the store) and the From its legs show. `Err` is the status to
    /// answer when the fork cannot be built.
    fn fork_for(
        &mut self,
        now: Now,
        req: &Message,
        peer: &Peer,
        who: &Identified,
        routed: Routed,
    ) -> Result<(Fork, Call, String), u16> {
        let customer_id =
            self.registrar.accounts().domain_for_host(&who.domain).map_or(NIL, |d| d.customer_id);
        let CallerId { source, from } = caller::caller_id(req, who, peer.local, &self.limits);
        let master = self.new_id();
        let group = routed.group;
        let spec = GroupSpec { customer_id, source: source.clone(), master_call_id: master, group };
        let seed = self.rng.next_u64();
        let dir = CallDirectory::of(self, &who.domain, now.wall, routed.carriers);
        let mut fork =
            Fork::build(spec, &dir, self.fork_cfg.clone(), now.into(), seed).map_err(|e| {
                debug!(error = %e, "cannot build the fork");
                500u16
            })?;
        let sip_call_id =
            req.call_id().map(|c| String::from_utf8_lossy(c).into_owned()).unwrap_or_default();
        let inbound = Call {
            sip_call_id,
            ..Call::dialing(master, customer_id, source, routed.dialed, now.wall)
        };
        self.out.push_back(Output::Persist(Persist::Call(inbound.clone())));
        let groupcall = fork.root().id;
        self.out.push_back(Output::Event(Event::CallStarted { call: master, groupcall }));
        fork.start(now.into());
        Ok((fork, inbound, from))
    }

    /// A one-destination group (a direct call to an extension or a number).
    /// A direct call to an extension that forwards on no answer rings it
    /// for its no-answer time, then the forward for the default ring time
    /// (in a ring group, the member's ring timeout covers both).
    fn single(&mut self, dest: Address) -> GroupDef {
        let id = self.new_id();
        let mut d = Destination::new(dest);
        if d.address.kind == AddressType::Endpoint {
            let accounts = self.registrar.accounts();
            let handling = accounts.extension_of(&d.address.target).map(|e| &e.handling);
            if let Some(h) = handling.filter(|h| h.forward_noanswer.is_some()) {
                let noanswer = std::time::Duration::from_secs(h.noanswer_secs());
                d.ring_timeout = Some(noanswer + self.fork_cfg.default_ring_timeout);
            }
        }
        GroupDef::new(id, RingMethod::RingAll, vec![d])
    }

    fn refuse(&mut self, now: Now, key: TxKey, req: &Message, peer: &Peer, r: Refusal) {
        let resp = match r {
            Refusal::Status(code) => self.local.status(req, code),
            Refusal::Banned => match self.registrar.limiter().config().action {
                registrar::BanAction::Reject => self.local.status(req, 403),
                registrar::BanAction::Drop => return self.tx.terminate(key),
            },
            Refusal::Challenge(challenges) => {
                let mut b = self.local.response(req, 407);
                for ch in challenges {
                    b = b.header(HeaderName::ProxyAuthenticate, Bytes::from(ch));
                }
                b.build()
            }
            Refusal::AuthFailed { user } => {
                self.counters.auth_failures += 1;
                self.registrar.auth_failed(now.at, peer.remote.ip(), &user, "INVITE");
                self.local.status(req, 403)
            }
        };
        self.respond(now, key, resp);
    }
}
