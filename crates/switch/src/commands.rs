//! Commands from the API: hang up a groupcall or a call, start a
//! click-to-call (RFC 3725), change accounts and ring groups (those in
//! `provision.rs`). Each gets one [`CommandOutcome`].

use crate::calls::ForkedCall;
use crate::dialer::{CallDirectory, Dialer};
use crate::input::{ClickToCall, Command, Now};
use crate::output::{CommandOutcome, Output, Persist};
use crate::switch::Switch;
use groupcall::{ContactTarget, Destination, Fork, GroupDef, GroupSpec, LegTarget};
use provisioning::Home;
use rand::RngCore;
use records::{AddressType, Call, Direction, RingGroupDestination};
use uuid::Uuid;

/// A click-to-call's source, checked.
struct ClickSource {
    /// How to dial it.
    target: LegTarget,
    /// `ext@domain`.
    aor: String,
    /// The extension's name (user part).
    user: String,
    /// Its domain.
    domain: String,
    /// Its display name (what the destinations are shown).
    display: String,
}

/// Why a click-to-call is not started.
enum Refusal {
    /// Its destinations break a `provisioning` rule.
    Invalid(provisioning::Invalid),
    /// Anything else (the source is not registered...).
    Reason(String),
}

impl From<String> for Refusal {
    fn from(reason: String) -> Refusal {
        Refusal::Reason(reason)
    }
}

impl Switch {
    pub(crate) fn on_command(&mut self, now: Now, c: Command) -> CommandOutcome {
        match c {
            Command::HangupGroupcall { id } => self.hangup(now, id, false),
            Command::HangupCall { id } => self.hangup(now, id, true),
            Command::StartGroupcall(c2c) => self.click_to_call(now, *c2c),
            Command::PutExtension(r) => self.put_extension(*r),
            Command::RemoveExtension { name, domain } => self.remove_extension(name, domain),
            Command::PutGroup(g) => self.put_group(*g),
            Command::RemoveGroup { id } => self.remove_group(id),
        }
    }

    /// Hangs up the live call that a groupcall or call record belongs to
    /// (`leg`: the id names a call record, and a ringing leg is cancelled
    /// alone).
    fn hangup(&mut self, now: Now, id: Uuid, leg: bool) -> CommandOutcome {
        let Some(cref) = self.calls.find(id) else { return CommandOutcome::NotFound };
        if let Some(s) = self.calls.get_mut(cref) {
            if leg && id != s.inbound.id {
                s.fork.hangup_call(now.into(), id);
            } else {
                s.fork.hangup(now.into());
            }
        }
        self.run_call(now, cref);
        CommandOutcome::Done
    }

    /// Click-to-call (RFC 3725 flow I): checks the source, makes the
    /// groupcall and the source's call record, and calls the source without
    /// an offer. The fork starts when the source answers with its offer
    /// (see `calls.rs`).
    fn click_to_call(&mut self, now: Now, c: ClickToCall) -> CommandOutcome {
        match self.try_click_to_call(now, c) {
            Ok(outcome) => outcome,
            Err(Refusal::Invalid(e)) => CommandOutcome::Invalid(e),
            Err(Refusal::Reason(reason)) => CommandOutcome::Refused(reason),
        }
    }

    fn try_click_to_call(&mut self, now: Now, c: ClickToCall) -> Result<CommandOutcome, Refusal> {
        let src = self.click_source(now, &c)?;
        let dests: Vec<RingGroupDestination> = c
            .destinations
            .iter()
            .map(|d| RingGroupDestination {
                kind: d.address.kind,
                target: d.address.target.clone(),
                ring_timeout_secs: d.ring_timeout.map(|t| t.as_secs()),
                delay_secs: None,
            })
            .collect();
        let home = Home { owner: c.customer_id, domain: &src.domain };
        provisioning::check_destinations(&dests, home, &self.held()).map_err(Refusal::Invalid)?;
        let host = self.listen.first().map(|(_, a)| a.to_string()).unwrap_or_default();
        let shown = c.source_shown_as(&host);
        let source_id = self.new_id();
        let fork = self.click_fork(now, &c, &src.domain, source_id)?;
        let dialer = Dialer {
            location: self.registrar.location(),
            routes: &self.routes,
            locals: &self.listen,
            wall: now.wall,
            cluster: self.cluster.as_ref(),
        };
        let dial = dialer
            .target(&src.target, &shown)
            .map_err(|code| format!("{} cannot be reached ({code})", src.aor))?
            .target;
        let (cref, leg) = self
            .b2bua
            .originate(&mut self.tx, now.at, dial)
            .map_err(|e| format!("cannot call {}: {e}", src.aor))?;
        let name = if src.display.is_empty() {
            String::new()
        } else {
            format!("\"{}\" ", src.display.replace('"', ""))
        };
        let from = format!("{name}<sip:{}@{host}>", src.user);
        let sip_call_id = self.b2bua.leg_sip_call_id(cref, leg).unwrap_or_default().to_owned();
        let record = Call {
            groupcall_id: fork.root().id,
            direction: Direction::Outgoing,
            sip_call_id,
            ..Call::dialing(source_id, c.customer_id, c.source.clone(), c.source, now.wall)
        };
        let groupcall = Box::new(fork.root().clone());
        self.out.push_back(Output::Persist(Persist::Call(record.clone())));
        let call = Box::new(record.clone());
        self.counters.calls_started += 1;
        let rings_until = now.at + self.fork_cfg.default_ring_timeout;
        let forked =
            ForkedCall::new(cref, fork, record, from, now.at).with_source(leg, rings_until);
        self.calls.insert(forked);
        self.run_call(now, cref);
        Ok(CommandOutcome::Started { groupcall, call })
    }

    /// The click-to-call source: an extension of the customer, with a
    /// reachable registration (the highest q).
    fn click_source(&self, now: Now, c: &ClickToCall) -> Result<ClickSource, String> {
        if c.source.kind != AddressType::Endpoint {
            return Err("the source must be an endpoint (ext@domain)".into());
        }
        let max = self.fork_cfg.max_legs;
        if c.destinations.is_empty() || c.destinations.len() > max {
            return Err(format!("between 1 and {max} destinations"));
        }
        let wanted = &c.source.target;
        let (name, domain) = wanted.split_once('@').ok_or("the source must be ext@domain")?;
        let accounts = self.registrar.accounts();
        let owned =
            accounts.domain_for_host(domain).is_some_and(|d| d.customer_id == c.customer_id);
        let ext = accounts
            .extension(name, domain)
            .filter(|_| owned)
            .ok_or_else(|| format!("no extension {wanted}"))?;
        let aor = ext.aor();
        let contact = self
            .registrar
            .location()
            .reachable(&aor, now.wall)
            .into_iter()
            .next()
            .ok_or_else(|| format!("{aor} is not registered"))?;
        let uri = contact.binding.contact;
        Ok(ClickSource {
            target: LegTarget::Contact {
                aor: aor.clone(),
                contact: ContactTarget { binding_key: uri.clone(), uri, q: contact.binding.q },
            },
            aor,
            user: ext.name.clone(),
            domain: ext.domain.clone(),
            display: ext.display_name.clone(),
        })
    }

    /// The (not yet started) fork over a click-to-call's destinations.
    fn click_fork(
        &mut self,
        now: Now,
        c: &ClickToCall,
        domain: &str,
        master: Uuid,
    ) -> Result<Fork, String> {
        let destinations = c
            .destinations
            .iter()
            .map(|d| Destination { address: d.address.clone(), ring_timeout: d.ring_timeout })
            .collect();
        let mut group = GroupDef::new(self.new_id(), c.ring_method, destinations);
        group.answer_method = c.answer_method;
        let spec = GroupSpec {
            customer_id: c.customer_id,
            source: c.source.clone(),
            master_call_id: master,
            group,
        };
        let seed = self.rng.next_u64();
        let dir = CallDirectory::of(self, domain, now.wall, None);
        // The source retransmits its 2xx for 64*T1 waiting for our ACK: the
        // destinations must answer within that.
        let mut cfg = self.fork_cfg.clone();
        cfg.overall_timeout = cfg.overall_timeout.min(self.source_wait);
        Fork::build(spec, &dir, cfg, now.into(), seed).map_err(|e| e.to_string())
    }
}
