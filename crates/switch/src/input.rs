//! What the switch core is told: bytes from the network, the time, DNS
//! answers, transport failures and commands from the API. Everything the
//! shell learns becomes one [`Input`]; nothing reaches the core any other
//! way.

use bytes::Bytes;
use records::Timestamp;
use sip_message::{ConnId, Peer, Transport};
use std::net::SocketAddr;
use std::time::Instant;
use uuid::Uuid;

use crate::output::{QueryId, Token};

/// The time, given with every input: a monotonic instant for deadlines and
/// a wall-clock timestamp for the records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for timers.
    pub at: Instant,
    /// Wall-clock time, written in `tm_*` fields.
    pub wall: Timestamp,
}

/// One SIP message as it arrived: a UDP datagram, or one message framed out
/// of a stream connection.
#[derive(Clone, Debug)]
pub struct Datagram {
    /// Where it came from: transport, remote and local address, and the
    /// stream connection for TCP, TLS, WS and WSS.
    pub peer: Peer,
    /// The bytes, unparsed.
    pub bytes: Bytes,
}

/// A next hop found by DNS (RFC 3263): transport and address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// Transport to use.
    pub transport: Transport,
    /// Address to send to.
    pub address: SocketAddr,
}

/// Names one command, so that its outcome ([`crate::Event::CommandDone`])
/// can be matched to it. Chosen by the shell; the switch only echoes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommandId(pub u64);

/// A groupcall started from the API (click-to-call, RFC 3725): the switch
/// rings `source` first, with an INVITE without an offer; when it answers
/// with its offer, it forks to `destinations` with that offer and bridges
/// the first to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClickToCall {
    /// Owner of the records.
    pub customer_id: Uuid,
    /// The party rung first: an `endpoint` (a registered extension of the
    /// customer).
    pub source: records::Address,
    /// What to ring once the source answered, in order.
    pub destinations: Vec<ClickDestination>,
    /// `ring_all` or `linear`.
    pub ring_method: records::RingMethod,
    /// `hangup_others`.
    pub answer_method: records::AnswerMethod,
}

/// One destination of a [`ClickToCall`]: what to ring (its display fields
/// go into the records as given), and for how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClickDestination {
    /// What to ring.
    pub address: records::Address,
    /// How long it rings (linear: then the next); `None`: the switch's
    /// default.
    pub ring_timeout: Option<std::time::Duration>,
}

impl ClickToCall {
    /// The From the source's phone shows: the first destination, at our
    /// address `host` (who it is being connected to).
    pub(crate) fn source_shown_as(&self, host: &str) -> String {
        let who = self
            .destinations
            .first()
            .map(|d| d.address.target.split('@').next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let who: String = who
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_'))
            .take(64)
            .collect();
        format!("<sip:{}@{host}>", if who.is_empty() { "click-to-call" } else { &who })
    }
}

/// What the API asks of the switch. Every command gets exactly one
/// [`crate::Event::CommandDone`] with its [`CommandId`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Start a click-to-call groupcall.
    StartGroupcall(Box<ClickToCall>),
    /// Add or replace a phone account (by name and domain); takes effect for
    /// the next request. Checked by the `provisioning` rules first; stored
    /// (an [`crate::Persist::Extension`]) once in effect.
    PutExtension(Box<records::ExtensionRecord>),
    /// Remove a phone account and its bindings (and from the store:
    /// [`crate::Persist::ExtensionRemoved`], even when the switch had none).
    RemoveExtension {
        /// Its name (user part).
        name: String,
        /// Its domain.
        domain: String,
    },
    /// Add or replace a ring group (by id). Checked by the `provisioning`
    /// rules first; stored ([`crate::Persist::RingGroup`]) once in effect.
    PutGroup(Box<records::RingGroup>),
    /// Remove a ring group (and from the store:
    /// [`crate::Persist::RingGroupRemoved`], even when the switch had none).
    RemoveGroup {
        /// Its id.
        id: Uuid,
    },
    /// Hang up the live call a groupcall (root or child) belongs to: ringing
    /// legs are CANCELed and the caller gets 487; after the answer both
    /// sides get a BYE. The groupcall ends `hangup`.
    HangupGroupcall {
        /// The groupcall record id.
        id: Uuid,
    },
    /// Hang up one call record: a leg still ringing is CANCELed (the rest of
    /// its group goes on); the answered leg, or the inbound call, hangs up
    /// the whole call.
    HangupCall {
        /// The call record id.
        id: Uuid,
    },
}

/// One input to [`crate::Switch::handle_input`].
#[derive(Clone, Debug)]
pub enum Input {
    /// A message from the network.
    Datagram(Datagram),
    /// The deadline of the last [`crate::Output::Timeout`] has come (or any
    /// time later: due timers run, others wait).
    Timeout,
    /// The answer to an [`crate::Output::Resolve`]; empty when the name
    /// did not resolve.
    Resolved {
        /// The question answered.
        query: QueryId,
        /// Next hops in RFC 3263 order.
        targets: Vec<Target>,
    },
    /// A [`crate::Output::Transmit`] could not be sent (refused connection,
    /// unreachable network, full queue).
    SendFailed {
        /// The token of that transmit.
        token: Token,
    },
    /// A stream connection closed (either side, or an error).
    ConnectionClosed {
        /// The connection.
        conn: ConnId,
    },
    /// A command from the API.
    Command {
        /// Echoed in its outcome.
        id: CommandId,
        /// What to do.
        command: Command,
    },
    /// What another node of the cluster changed (ignored without
    /// [`crate::SwitchConfig::cluster`]).
    Cluster(crate::ClusterChange),
    /// A datagram read from the ng socket (an rtpengine's reply).
    MediaDatagram {
        /// Where it came from.
        from: std::net::SocketAddr,
        /// Its bytes.
        bytes: bytes::Bytes,
    },
}
