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
    /// A leg another cluster node relays through this one.
    relayed: Option<RelayedLeg>,
}

/// A leg another cluster node sends through this one, to a phone whose
/// flow this node holds (`hop.rs`).
#[derive(Clone, Debug)]
struct RelayedLeg {
    /// The node that carries the call.
    node: String,
    /// The phone's AOR.
    aor: String,
    /// The binding's Contact (the Request-URI), the one contact rung.
    contact: String,
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
        let (who, routed) = match self.relayed_leg(now, &req) {
            Some(Ok(leg)) => self.relay_route(leg),
            Some(Err(code)) => {
                let resp = self.local.status(&req, code);
                return self.respond(now, key, resp);
            }
            None => {
                let identified =
                    caller::identify(&mut self.registrar, &self.routes, now.at, &req, &peer);
                let who = match identified {
                    Ok(who) => who,
                    Err(refusal) => return self.refuse(now, key, &req, &peer, refusal),
                };
                let user = dialed_user(&req);
                let asked = match self.pickup_asked(&who, &req, &user) {
                    Ok(a) => a,
                    Err(code) => {
                        let resp = self.local.status(&req, code);
                        return self.respond(now, key, resp);
                    }
                };
                if let Some(ask) = asked {
                    let invite = b2bua::PickupInvite { key, request: req, peer };
                    return self.pick_up(now, invite, &who, ask);
                }
                match self.route(&who, &user) {
                    Ok(r) => (who, r),
                    Err(code) => {
                        let resp = self.local.status(&req, code);
                        return self.respond(now, key, resp);
                    }
                }
            }
        };
        let relayed_for = routed.relayed.as_ref().map(|l| l.node.clone());
        match self.fork_for(now, &req, &peer, &who, routed) {
            Ok((fork, inbound, from)) => {
                let cref = self.b2bua.accept_inbound(key, req, peer);
                self.counters.calls_started += 1;
                let mut call = ForkedCall::new(cref, fork, inbound, from, now.at);
                call.relayed_for = relayed_for;
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

    /// A leg another cluster node relays through this one: the INVITE
    /// carries a hop token (`hop.rs`) for its Request-URI and To. `None`
    /// for any other INVITE (and for every INVITE without a cluster);
    /// `Err` is the status to answer a token that does not prove a node
    /// of this cluster (forged, stale, for another phone).
    fn relayed_leg(&self, now: Now, req: &Message) -> Option<Result<RelayedLeg, u16>> {
        let cluster = self.cluster.as_ref()?;
        let value = req.header_named(crate::hop::HEADER)?;
        let Some(uri) = req.request_uri_bytes() else { return Some(Err(400)) };
        let Ok(to) = req.to_header() else { return Some(Err(400)) };
        let user = String::from_utf8_lossy(to.uri.user.unwrap_or_default());
        let aor = format!("{user}@{}", String::from_utf8_lossy(to.uri.host));
        let secret = &cluster.settings.secret;
        let leg = crate::hop::check(secret, value, uri, aor.as_bytes(), now.wall).map(|hop| {
            RelayedLeg { node: hop.node, aor, contact: String::from_utf8_lossy(uri).into_owned() }
        });
        Some(leg.ok_or(403))
    }

    /// Who calls and what rings for a relayed leg: the calling node, and
    /// the one contact of this node's it names.
    fn relay_route(&mut self, leg: RelayedLeg) -> (Identified, Routed) {
        let domain = leg.aor.rsplit('@').next().unwrap_or_default().to_owned();
        let caller = routing::Caller::Carrier { name: format!("node {}", leg.node) };
        let dest = Address::new(AddressType::Endpoint, leg.aor.clone());
        let id = self.new_id();
        let group = GroupDef::new(id, RingMethod::RingAll, vec![Destination::new(dest.clone())]);
        let routed = Routed { group, dialed: dest, carriers: None, relayed: Some(leg) };
        (Identified { caller, domain }, routed)
    }

    /// Where the INVITE goes: the group to ring, what was dialed (for the
    /// inbound record), and the carrier targets routing already found for a
    /// PSTN number. `Err` is the status to answer.
    fn route(&mut self, who: &Identified, user: &str) -> Result<Routed, u16> {
        let accounts = self.registrar.accounts();
        let decision =
            self.routes.route(&who.caller, user, |n, d| accounts.extension(n, d).is_some());
        Ok(match decision {
            Decision::Extension { aor } => {
                let dest = Address::new(AddressType::Endpoint, aor);
                Routed {
                    group: self.single(dest.clone()),
                    dialed: dest,
                    carriers: None,
                    relayed: None,
                }
            }
            Decision::Group(g) => Routed {
                group: GroupDef::from(&*g),
                dialed: Address::new(AddressType::Groupcall, format!("{}@{}", g.number, g.domain)),
                carriers: None,
                relayed: None,
            },
            Decision::Tel { number, targets } => {
                let dest = Address::new(AddressType::Tel, number.clone());
                Routed {
                    group: self.single(dest.clone()),
                    dialed: dest,
                    carriers: Some((number, targets)),
                    relayed: None,
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
        let mut dir = CallDirectory::of(self, &who.domain, now.wall, routed.carriers);
        let recorded = routed.relayed.is_none();
        dir.only_contact = routed.relayed.map(|l| l.contact);
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
        if recorded {
            self.out.push_back(Output::Persist(Persist::Call(inbound.clone())));
            let groupcall = fork.root().id;
            self.out.push_back(Output::Event(Event::CallStarted { call: master, groupcall }));
        }
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

    pub(crate) fn refuse(&mut self, now: Now, key: TxKey, req: &Message, peer: &Peer, r: Refusal) {
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
                let method = match req.method() {
                    Some(sip_message::Method::Subscribe) => "SUBSCRIBE",
                    _ => "INVITE",
                };
                self.registrar.auth_failed(now.at, peer.remote.ip(), &user, method);
                self.local.status(req, 403)
            }
        };
        self.respond(now, key, resp);
    }
}

/// The user part the Request-URI dials (a `tel:` URI's digits).
fn dialed_user(req: &Message) -> String {
    match req.request_uri() {
        Some(Ok(u)) => match u.scheme {
            sip_message::Scheme::Tel => u.phone_digits().unwrap_or_default(),
            _ => u.user.map(|u| String::from_utf8_lossy(u).into_owned()).unwrap_or_default(),
        },
        _ => String::new(),
    }
}
