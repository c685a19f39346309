//! Where a fork's legs go: the [`groupcall::Directory`] a fork is built
//! from (registered contacts, stored groups, and how each `sip`/`tel`
//! destination is reached: carrier hops in failover order, one IP hop, or a
//! DNS question), and the turning of a fork's leg target into the B2BUA's
//! [`DialTarget`]. Carrier and DNS-target failover is the fork's: this
//! module only lists the hops.

use b2bua::DialTarget;
use groupcall::{ContactTarget, Directory, Hop, LegTarget, Reach};
use records::{RingGroup, Timestamp};
use registrar::LocationStore;
use routing::{CarrierTarget, RouteTable};
use sip_message::{Peer, Scheme, Transport, Uri};
use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};

/// A local address for `transport` in the family of `remote` (any
/// transport of that family when there is none for it).
pub(crate) fn local_for(
    locals: &[(Transport, SocketAddr)],
    transport: Transport,
    remote: SocketAddr,
) -> Option<SocketAddr> {
    let family = |a: &SocketAddr| a.is_ipv4() == remote.is_ipv4();
    locals
        .iter()
        .find(|(t, a)| *t == transport && family(a))
        .or_else(|| locals.iter().find(|(_, a)| family(a)))
        .map(|(_, a)| *a)
}

/// The hop of a carrier target.
pub(crate) fn carrier_hop(t: CarrierTarget) -> Hop {
    Hop {
        request_uri: t.request_uri,
        transport: t.transport,
        address: t.address,
        trunk: Some(t.carrier),
    }
}

/// The one hop of a `sip:` URI whose host is an IP address; `None` for a
/// host name.
pub(crate) fn ip_hop(uri: &str, u: &Uri<'_>) -> Option<Hop> {
    let host = std::str::from_utf8(u.host).ok()?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let ip: IpAddr = host.parse().ok()?;
    let transport = u.transport().and_then(Transport::from_token).unwrap_or(Transport::Udp);
    let transport = if u.scheme == Scheme::Sips { transport.secured() } else { transport };
    Some(Hop {
        request_uri: uri.to_owned(),
        transport,
        address: SocketAddr::new(ip, u.port.unwrap_or(transport.default_port())),
        trunk: None,
    })
}

/// What a fork may look up while it is built, for one call.
pub(crate) struct CallDirectory<'a> {
    /// Registered contacts.
    pub(crate) location: &'a LocationStore,
    /// Ring groups and carriers.
    pub(crate) routes: &'a RouteTable,
    /// The domain group numbers are looked up in.
    pub(crate) domain: &'a str,
    /// Now, for binding expiry.
    pub(crate) wall: Timestamp,
    /// Carrier targets the routing decision already found for this number
    /// (a direct PSTN call): used once instead of routing again.
    pub(crate) routed: RefCell<Option<(String, Vec<CarrierTarget>)>>,
    /// What round-robin and least-recent groups remember of past calls.
    pub(crate) hunt: &'a HuntMemories,
    /// Extensions, for their call handling (DND, forwards, `max_calls`).
    pub(crate) accounts: &'a registrar::Accounts,
    /// How many calls each extension is on.
    pub(crate) occupancy: &'a crate::occupancy::Occupancy,
    /// A leg another cluster node relays through this one rings only this
    /// contact, one of this node's own (never back through another node),
    /// with no call handling of its own (the calling node applied it).
    pub(crate) only_contact: Option<String>,
}

impl<'a> CallDirectory<'a> {
    /// The directory of `switch` for a call in `domain` at `wall`;
    /// `routed` are carrier targets routing found already for a number.
    pub(crate) fn of(
        switch: &'a crate::Switch,
        domain: &'a str,
        wall: Timestamp,
        routed: Option<(String, Vec<CarrierTarget>)>,
    ) -> CallDirectory<'a> {
        CallDirectory {
            location: switch.registrar.location(),
            routes: &switch.routes,
            domain,
            wall,
            routed: RefCell::new(routed),
            hunt: &switch.hunt,
            accounts: switch.registrar.accounts(),
            occupancy: &switch.occupancy,
            only_contact: None,
        }
    }
}

/// What each `round_robin` / `least_recent` group remembers (by group id),
/// kept by the switch across calls.
pub(crate) type HuntMemories = rustc_hash::FxHashMap<uuid::Uuid, groupcall::HuntMemory>;

/// A stored hunt memory, for the fork engine.
pub(crate) fn hunt_from_record(
    r: records::HuntMemoryRecord,
) -> (uuid::Uuid, groupcall::HuntMemory) {
    let m = groupcall::HuntMemory { last_answered: r.last_answered, answered_at: r.answered_at };
    (r.group_id, m)
}

/// The fork engine's hunt memory of `group`, to store.
pub(crate) fn hunt_record(
    group: uuid::Uuid,
    m: &groupcall::HuntMemory,
) -> records::HuntMemoryRecord {
    records::HuntMemoryRecord {
        group_id: group,
        last_answered: m.last_answered.clone(),
        answered_at: m.answered_at.clone(),
    }
}

impl Directory for CallDirectory<'_> {
    fn contacts(&self, aor: &str) -> Vec<ContactTarget> {
        self.location
            .reachable(aor, self.wall)
            .into_iter()
            .filter(|l| match &self.only_contact {
                Some(c) => l.via.is_none() && l.binding.contact == *c,
                None => true,
            })
            .map(|l| ContactTarget {
                binding_key: l.binding.contact.clone(),
                uri: l.binding.contact,
                q: l.binding.q,
            })
            .collect()
    }

    fn group(&self, key: &str) -> Option<&RingGroup> {
        self.routes.group(key, self.domain)
    }

    fn endpoint_policy(&self, aor: &str) -> groupcall::EndpointPolicy {
        let ext = self.accounts.extension_of(aor).filter(|_| self.only_contact.is_none());
        let Some(ext) = ext else {
            return groupcall::EndpointPolicy::default();
        };
        let h = &ext.handling;
        groupcall::EndpointPolicy {
            dnd: h.dnd,
            busy: h.max_calls.is_some_and(|max| self.occupancy.calls(aor) >= max),
            forward_always: h.forward_always.clone(),
            forward_busy: h.forward_busy.clone(),
            forward_noanswer: h.forward_noanswer.clone().map(|to| groupcall::NoAnswerForward {
                to,
                after: std::time::Duration::from_secs(h.noanswer_secs()),
            }),
        }
    }

    fn hunt_memory(&self, group: uuid::Uuid) -> groupcall::HuntMemory {
        self.hunt.get(&group).cloned().unwrap_or_default()
    }

    fn reach(&self, target: &LegTarget) -> Reach {
        match target {
            LegTarget::Tel { number } => {
                let routed = self.routed.borrow_mut().take();
                let targets = match routed {
                    Some((n, t)) if &n == number => t,
                    _ => self.routes.tel_targets(number),
                };
                if targets.is_empty() {
                    Reach::Unreachable(404)
                } else {
                    Reach::Hops(targets.into_iter().map(carrier_hop).collect())
                }
            }
            LegTarget::Sip { uri } => match Uri::parse(uri.as_bytes()) {
                Ok(u) if u.is_sip() => match ip_hop(uri, &u) {
                    Some(hop) => Reach::Hops(vec![hop]),
                    None => Reach::Resolve,
                },
                _ => Reach::Unreachable(416),
            },
            _ => Reach::Direct,
        }
    }
}

/// The host, port and transport a `sip:` destination asks DNS about.
pub(crate) fn dns_question(uri: &str) -> Option<(String, Option<u16>, Option<Transport>)> {
    let u = Uri::parse(uri.as_bytes()).ok()?;
    let host = String::from_utf8_lossy(u.host).into_owned();
    let transport = u.transport().and_then(Transport::from_token);
    let transport = match u.scheme {
        Scheme::Sips => Some(transport.unwrap_or(Transport::Tls).secured()),
        _ => transport,
    };
    Some((host, u.port, transport))
}

/// Turns a fork's leg target into what the B2BUA dials, or the status the
/// leg fails with.
pub(crate) struct Dialer<'a> {
    pub(crate) location: &'a LocationStore,
    pub(crate) routes: &'a RouteTable,
    pub(crate) locals: &'a [(Transport, SocketAddr)],
    pub(crate) wall: Timestamp,
    /// This node's cluster: a contact another node holds is dialed through
    /// that node.
    pub(crate) cluster: Option<&'a crate::cluster::Cluster>,
}

/// What a leg dials, and the cluster node it is relayed through (a phone
/// registered on another node).
pub(crate) struct Dialed {
    pub(crate) target: DialTarget,
    pub(crate) relay_node: Option<String>,
}

impl Dialer<'_> {
    /// The dial target of `target`, presenting `from` to the callee.
    pub(crate) fn target(&self, target: &LegTarget, from: &str) -> Result<Dialed, u16> {
        match target {
            LegTarget::Contact { aor, contact } => {
                let loc = self
                    .location
                    .reachable(aor, self.wall)
                    .into_iter()
                    .find(|l| l.binding.contact == contact.binding_key)
                    .ok_or(480u16)?;
                let mut target = DialTarget {
                    request_uri: contact.uri.clone(),
                    to: format!("<sip:{aor}>"),
                    from: from.to_owned(),
                    next_hop: loc.target(),
                    credentials: None,
                    extra_headers: Vec::new(),
                    sdp: None,
                };
                let relay_node = loc.via.clone();
                if let Some(node) = &relay_node {
                    self.through(node, aor, &mut target)?;
                }
                Ok(Dialed { target, relay_node })
            }
            LegTarget::Hop { hop } => Ok(Dialed { target: self.hop(hop, from)?, relay_node: None }),
            // The directory gives hops for every `sip`/`tel` destination.
            // A pickup's leg is never dialed.
            LegTarget::Sip { .. } | LegTarget::Tel { .. } | LegTarget::Pickup { .. } => Err(500),
        }
    }

    /// Sends a leg to a phone that `node` holds through that node: to its
    /// advertised address, with the token that lets it in. 480 when the
    /// node is not live (its bindings are unreachable then anyway).
    fn through(&self, node: &str, aor: &str, target: &mut DialTarget) -> Result<(), u16> {
        let cluster = self.cluster.ok_or(480u16)?;
        let remote = cluster.node_sip(node).ok_or(480u16)?;
        let local = local_for(self.locals, Transport::Udp, remote).ok_or(503u16)?;
        target.next_hop = Peer { transport: Transport::Udp, remote, local, conn: None };
        let own = &cluster.settings;
        let token =
            crate::hop::token(&own.secret, &own.node_id, self.wall, &target.request_uri, aor);
        target.extra_headers.push((crate::hop::HEADER.to_owned(), token));
        Ok(())
    }

    fn hop(&self, hop: &Hop, from: &str) -> Result<DialTarget, u16> {
        let local = local_for(self.locals, hop.transport, hop.address).ok_or(503u16)?;
        let carrier = hop.trunk.as_deref().and_then(|t| self.routes.carrier(t));
        Ok(DialTarget {
            request_uri: hop.request_uri.clone(),
            to: format!("<{}>", hop.request_uri),
            from: from.to_owned(),
            next_hop: Peer { transport: hop.transport, remote: hop.address, local, conn: None },
            credentials: carrier
                .filter(|c| !c.username.is_empty())
                .map(|c| (c.username.clone(), c.password.clone())),
            extra_headers: carrier.map(|c| c.headers.clone()).unwrap_or_default(),
            sdp: None,
        })
    }
}
