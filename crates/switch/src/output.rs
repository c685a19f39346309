//! What the switch core asks of its shell: messages to send, names to
//! resolve, records to store, events to publish, and when to wake it up.

use records::{Binding, Call, Groupcall};
use sip_message::{Message, Peer, Transport};
use std::time::Instant;
use uuid::Uuid;

/// Names what a transmit belongs to, so that a failure to send it
/// ([`crate::Input::SendFailed`]) reaches the transaction that sent it.
/// Opaque to the shell: hand it to the transport and give it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Token(pub u64);

impl Token {
    /// A message outside any transaction (an ACK for a 2xx, a keep-alive):
    /// a failure is only counted.
    pub const NONE: Token = Token(0);
}

/// A message to send.
#[derive(Clone, Debug)]
pub struct Transmit {
    /// Where: transport, remote address, local address to send from, and
    /// the stream connection to use when there is one. For a response this
    /// is already the RFC 3261 18.2.2 / RFC 3581 target.
    pub peer: Peer,
    /// The message (serialise with `to_bytes`).
    pub message: Message,
    /// What it belongs to.
    pub token: Token,
}

/// A DNS question (RFC 3263) for the shell's resolver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(pub u64);

/// A name to resolve into next hops: answer with
/// [`crate::Input::Resolved`] carrying the same `id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The question's id.
    pub id: QueryId,
    /// Host name (never an IP address).
    pub host: String,
    /// Port, when the URI gave one (then no NAPTR/SRV lookup).
    pub port: Option<u16>,
    /// Transport, when the URI gave one (then no NAPTR lookup).
    pub transport: Option<Transport>,
}

/// A record to store durably.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persist {
    /// A groupcall record (created or changed).
    Groupcall(Groupcall),
    /// A call record: a leg, or an inbound call.
    Call(Call),
    /// A binding added or refreshed.
    Binding(Binding),
    /// A binding removed.
    BindingRemoved {
        /// Its address-of-record.
        aor: String,
        /// Its contact URI.
        contact: String,
    },
    /// A round-robin or least-recent ring group's memory changed (a member
    /// answered): what its next calls start from, after a restart too.
    HuntMemory(records::HuntMemoryRecord),
    /// A phone account added or changed (a `PutExtension` in effect).
    Extension(Box<records::ExtensionRecord>),
    /// A phone account removed.
    ExtensionRemoved {
        /// Its name (user part).
        name: String,
        /// Its domain.
        domain: String,
    },
    /// A ring group added or changed (a `PutGroup` in effect).
    RingGroup(Box<records::RingGroup>),
    /// A ring group removed.
    RingGroupRemoved {
        /// Its id.
        id: Uuid,
    },
}

/// Something the operator (logs, metrics, webhooks) may want to know.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A message was dropped before any transaction: unparsable, or
    /// malformed in a way RFC 3261 says to drop.
    Dropped {
        /// Where it came from.
        peer: Peer,
        /// Why.
        reason: String,
    },
    /// An inbound call is served by a fork.
    CallStarted {
        /// The inbound call record.
        call: Uuid,
        /// Its root groupcall record.
        groupcall: Uuid,
    },
    /// A ringing call was answered by a pickup (group, directed or
    /// `Replaces`): its root groupcall's `answer_call_id` names the
    /// pickup's call record, whose destination is the picker.
    CallPickedUp {
        /// The inbound call record.
        call: Uuid,
        /// Its root groupcall record.
        groupcall: Uuid,
        /// The AOR of the extension that picked it up.
        picker: String,
    },
    /// A call to a ring group ended with nobody answering: the
    /// `groupcall_missed` webhook's data (the members rung and how each
    /// leg ended).
    GroupcallMissed(Box<pbx_features::GroupcallMissed>),
    /// A served call is completely over.
    CallEnded {
        /// The inbound call record.
        call: Uuid,
    },
    /// A command was carried out, or not.
    CommandDone {
        /// The command's id.
        id: crate::CommandId,
        /// How it went.
        outcome: CommandOutcome,
    },
    /// A carrier given by DNS name has an address now (or a new one).
    CarrierResolved {
        /// The carrier.
        name: String,
        /// Where its calls go.
        address: std::net::SocketAddr,
    },
    /// A carrier's DNS name did not resolve: its calls go where they went
    /// before (nowhere, if it never resolved).
    CarrierUnresolved {
        /// The carrier.
        name: String,
    },
    /// A stream connection closed and made bindings unreachable.
    BindingsUnreachable {
        /// How many.
        count: usize,
    },
    /// A cluster node went down (its lease ran out, or it restarted): its
    /// bindings are unreachable and what waited for its answers failed.
    NodeDown {
        /// Its id.
        node: String,
        /// Its bindings made unreachable.
        bindings: usize,
    },
    /// How many bindings of other cluster nodes this node holds changed
    /// (their phones registered or went away there).
    ClusterBindings {
        /// Held now.
        held: usize,
    },
    /// Provisioning read from the shared database was not taken (ring
    /// group numbers clash): the held one stays.
    ProvisioningRefused {
        /// Why.
        reason: String,
    },
    /// A failed authentication, a ban or its end (for the operator's
    /// `security` log and fail2ban).
    Security(registrar::SecurityEvent),
    /// A value beyond the copy limits: the request was refused, or the
    /// value cut from what the other legs are sent.
    Oversize(b2bua::limits::Notice),
    /// Media anchoring: an ng request done, an rtpengine down or up, a
    /// call that went on without the media relay.
    Media(crate::MediaEvent),
    /// Overload began (new INVITEs are answered 503) or ended.
    Overload {
        /// `true` when it began.
        began: bool,
        /// The input queue delay that made it begin or end.
        queue_delay: std::time::Duration,
        /// Datagrams waiting in the queue then.
        queue_depth: usize,
        /// New requests shed during the episode (when it ended).
        shed: u64,
    },
}

/// How a [`crate::Command`] went.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandOutcome {
    /// Done (a hangup is under way, an account or group is in effect).
    Done,
    /// A click-to-call is under way: its groupcall and the source's call
    /// record as created.
    Started {
        /// The groupcall.
        groupcall: Box<Groupcall>,
        /// The source leg's call record.
        call: Box<Call>,
    },
    /// Nothing live (or known) has that id.
    NotFound,
    /// Refused, and why (a source that is not registered...).
    Refused(String),
    /// An extension, ring group or click-to-call breaks a `provisioning`
    /// rule: nothing changed.
    Invalid(provisioning::Invalid),
}

/// One output of [`crate::Switch::poll_output`].
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // moved once from the queue to the shell
pub enum Output {
    /// Send a message.
    Transmit(Transmit),
    /// Resolve a name.
    Resolve(Query),
    /// Store a record.
    Persist(Persist),
    /// Tell the operator.
    Event(Event),
    /// Send this datagram from the ng socket to an rtpengine (media
    /// anchoring; its reply comes back as [`crate::Input::MediaDatagram`]).
    Media(crate::MediaTransmit),
    /// Nothing more for now: call `handle_input(now, Input::Timeout)` at this
    /// instant, or earlier with any other input.
    Timeout(Instant),
}
