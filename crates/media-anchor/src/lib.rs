//! # media-anchor: media anchoring through rtpengine, sans-IO
//!
//! forkswitch never touches RTP: when media is anchored, rtpengine relays
//! it, and the switch tells rtpengine what to do over its *ng* control
//! protocol (UDP, `<cookie> <bencoded dictionary>`). This crate is all of
//! that control side that needs no socket, no clock and no OS randomness:
//!
//! - the **codec** ([`codec`], [`command`], [`reply`], [`options`]): typed
//!   commands (`ping`, `offer`, `answer`, `delete`, `query`, `list`) with
//!   the options of rtpengine's ng protocol document (flags, `replace`,
//!   ICE, DTLS, SDES, rtcp-mux, transport protocol), typed replies (`error`
//!   with its reason, `ok` with its `warning`, `query`'s per-tag packet
//!   counters). Bencode is `torrust-tracker-contrib-bencode`, which reads
//!   dictionary keys in any order (rtpengine does not sort them), bounds
//!   nesting and rejects duplicate keys; datagrams are bounded.
//! - the **client** [`NgClient`]: requests to a list of rtpengine instances
//!   with retries (same cookie), failover, call affinity, weights and
//!   up/down health (see [`client`]).
//! - **profiles** ([`Profile`], [`LegMedia`]): `auto`, `rtp`, `srtp-sdes`,
//!   `webrtc`, and the ng options that make the SDP toward a leg fit it.
//! - **settings** ([`MediaSection`] → [`MediaSettings`], and a
//!   destination's [`DestinationMedia`]): the `[media]` configuration,
//!   checked, with errors naming their key.
//! - the **simulated rtpengine** [`SimRtpengine`] for the deterministic
//!   simulation, with the invariants a run is judged by.
//!
//! It never opens a socket, reads a clock or asks the OS for randomness:
//! time is passed in, randomness comes from a seed.
//!
//! ## The client's contract (quinn-proto style)
//!
//! - **Build** with [`NgClient::new`]`(settings, seed, now)`; it pings
//!   every instance at once.
//! - **Inputs**, each with the current `now` (monotonic, never going back):
//!   - [`NgClient::send`]`(now, token, command)`: a request, routed by its
//!     call ([`NgClient::send_to`] names the instance instead);
//!   - [`NgClient::handle_datagram`]`(now, from, bytes)`: a datagram read
//!     from the ng socket;
//!   - [`NgClient::handle_timeout`]`(now)`: the deadline has come.
//! - **Outputs**, drained after every input:
//!   - [`NgClient::poll_transmit`]: datagrams to send, in order;
//!   - [`NgClient::poll_event`]: [`ClientEvent::Done`] (a request's reply
//!     or failure, with its token, command, instance and latency: the
//!     request metrics), [`ClientEvent::InstanceDown`] /
//!     [`ClientEvent::InstanceUp`] (WARN log lines, the up/down gauge),
//!     [`ClientEvent::ReplyDropped`] (a wrong or unknown cookie);
//!   - [`NgClient::poll_timeout`]: when to call `handle_timeout` next.
//! - **Getters** ([`NgClient::instances`], [`NgClient::call_instance`],
//!   [`NgClient::counters`], ...) read state and change nothing.
//!
//! A shell owns one UDP socket for all instances and does nothing else
//! about media; the deterministic simulation wires the same calls to
//! [`SimRtpengine`] over its simulated network.
//!
//! Main types: [`NgClient`], [`Command`], [`Reply`], [`Profile`],
//! [`MediaSettings`], [`SimRtpengine`].
#![deny(missing_docs)]

mod bencode;
pub mod client;
pub mod codec;
pub mod command;
pub mod options;
pub mod profile;
pub mod reply;
pub mod sdp;
pub mod settings;
pub mod sim;

pub use client::{
    ClientCounters, ClientEvent, Done, DropReason, Failure, InstanceId, InstanceState, NgClient,
    RequestToken, Transmit,
};
pub use codec::{CodecError, Cookie};
pub use command::{Answer, Command, CommandKind, Delete, Offer, Query, SdpOptions};
pub use profile::{LegMedia, Profile, SdpRole};
pub use reply::{CallStats, PacketCounts, Reply, ReplyBody};
pub use sdp::audio_address;
pub use settings::{
    Anchoring, DestinationMedia, InstanceSpec, MediaMode, MediaSection, MediaSettings, OnFailure,
    RtpengineSettings, SettingsError,
};
pub use sim::{SimAnswer, SimFaults, SimRtpengine};
