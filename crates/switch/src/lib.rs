//! # switch: the forkswitch switch core
//!
//! The whole softswitch as ONE sans-IO state machine, in the style of
//! str0m's `Rtc` and quinn-proto's `Connection`: the codec's validation,
//! the RFC 3261 transaction layer, the registrar, routing, the fork engine
//! (`groupcall`) and the B2BUA's legs, composed. It never reads a clock,
//! never touches a socket, a resolver or a database, and never asks the OS
//! for randomness: time is an input, every random choice comes from the
//! seed it was built with, and everything it wants done is an output. The
//! binary (`forkswitch`) is a thin tokio shell around it; the simulation
//! test (`tests/simulation.rs`) drives the same machine over a simulated,
//! lossy network in virtual time.
//!
//! ## The contract
//!
//! - **Build** with [`Switch::new`]`(config, state, seed, now)`: settings
//!   ([`SwitchConfig`], plain values: the switch derives the settings of its
//!   parts), the accounts, bindings, carriers, routes and ring groups the
//!   shell loaded ([`SwitchState`]), a seed, and the current time. `Err`
//!   when the carriers, routes and ring groups do not fit together
//!   ([`SwitchState::check`] tells beforehand).
//! - **Inputs** go in through [`Switch::handle_input`]`(now, input)`, one
//!   at a time, with the current [`Now`] (monotonic instant and wall-clock
//!   timestamp; never going backwards):
//!   - [`Input::Datagram`]: a message's bytes with its [`sip_message::Peer`]
//!     (transport, remote and local address, stream connection);
//!   - [`Input::Timeout`]: the last deadline has come;
//!   - [`Input::Resolved`]: the answer to an [`Output::Resolve`];
//!   - [`Input::SendFailed`]: an [`Output::Transmit`] could not be sent
//!     (its [`Token`] names the transaction, which fails over at once);
//!   - [`Input::ConnectionClosed`]: a stream connection closed (bindings
//!     registered over it become unreachable);
//!   - [`Input::Command`]: a [`Command`] from the API, with a [`CommandId`];
//!     its outcome comes back as [`Event::CommandDone`] with that id;
//!   - [`Input::Cluster`]: what another node of the cluster changed (a
//!     [`ClusterChange`]: live nodes, bindings, provisioning), read by the
//!     shell from the shared database (see `cluster.rs`).
//!   - [`Input::MediaDatagram`]: a datagram read from the ng socket (media
//!     anchoring: an rtpengine's reply).
//! - **Load**: before handing in a datagram, the shell may report how long
//!   it waited in the input queue with [`Switch::set_load`] (the overload
//!   signal of admission control, `admission.rs`); the events it causes
//!   come out with the outputs of the next `handle_input`.
//! - **Outputs**: after *every* `handle_input` (and after `new`), call
//!   [`Switch::poll_output`] until it returns [`Output::Timeout`], and do
//!   what each output says, in order:
//!   - [`Output::Transmit`]: send the message to its peer (responses are
//!     already addressed per RFC 3261 18.2.2 and RFC 3581); keep its token
//!     for a failure report;
//!   - [`Output::Resolve`]: resolve the name (RFC 3263) and answer with
//!     [`Input::Resolved`], empty when it failed;
//!   - [`Output::Persist`]: store the record (the last one of an id wins).
//!     Every change of an extension or a ring group comes out this way too
//!     (a command puts or removes one: checked by the `provisioning` rules,
//!     applied, persisted, then its [`Event::CommandDone`]), so the shell is
//!     the only writer of the store, in order with the records;
//!   - [`Output::Event`]: log it, count it, publish it;
//!   - [`Output::Media`]: send the datagram from the one ng socket to the
//!     rtpengine it names (media anchoring, `media.rs`: the ng client with
//!     its retries, failover and instance health lives in the core; a leg's
//!     INVITE, a 183/2xx to the caller and a relayed re-INVITE/UPDATE wait
//!     in their own state for rtpengine's SDP; nothing blocks);
//!   - [`Output::Timeout`]: the next deadline; call
//!     `handle_input(now, Input::Timeout)` when it comes (earlier inputs are
//!     fine: the deadline is asked for again after them).
//! - **Getters** ([`Switch::stats`], [`Switch::counters`], [`Switch::is_idle`],
//!   [`Switch::registrar`]) read state and may be called at any time; they
//!   change nothing.
//!
//! The order of outputs is meaningful (an ACK precedes the BYE that
//! follows it on the same leg), so a shell must not reorder transmits.
//!
//! ## Inside
//!
//! One [`timer_queue::TimerQueue`] holds every timer of the machine, keyed
//! by owner (transaction, a call's dialogs, a call's fork, housekeeping);
//! each owner keeps its own current deadline. One list of methods
//! ([`sip_message::SUPPORTED`]) makes the 501 decision, every `Allow`
//! header, the in-dialog requests relayed and the methods counted. Failover
//! (carriers, DNS targets) is a linear child of the fork, visible in the
//! records. Persistence is an output: the switch holds no store.
//!
//! The PBX features around ring groups (`pbx-features`) are composed here
//! too: call pickup by feature code or `Replaces` (`pickup.rs`, through the
//! fork's one-answer rule), busy lamps (`blf.rs`: SUBSCRIBE answered, every
//! call's dialogs shown to the notifier, its NOTIFYs sent in client
//! transactions of their own, its deadline in the one timer queue) and the
//! missed-groupcall notice ([`Event::GroupcallMissed`]).
//!
//! Main types: [`Switch`], [`SwitchConfig`], [`SwitchState`], [`Input`],
//! [`Output`], [`Command`], [`Event`], [`Persist`].
#![deny(missing_docs)]

mod admission;
mod blf;
mod caller;
mod calls;
mod cluster;
mod commands;
mod config;
pub mod counters;
mod dialer;
mod dns;
mod hop;
mod input;
mod invite;
mod local;
mod media;
mod occupancy;
mod output;
mod pickup;
mod provision;
pub mod received;
mod requests;
mod switch;
mod timers;

pub use admission::{AdmissionConfig, Load};
pub use cluster::{ClusterChange, ClusterSettings, Node};
pub use config::{CallSettings, SipTimers, SwitchConfig, SwitchState};
pub use counters::Counters;
pub use input::{ClickDestination, ClickToCall, Command, CommandId, Datagram, Input, Now, Target};
pub use local::LocalIdentity;
pub use media::{MediaEvent, MediaTransmit};
pub use output::{CommandOutcome, Event, Output, Persist, Query, QueryId, Token, Transmit};
pub use records::Provisioning;
pub use routing::{Carrier, Route, RouteError};
pub use switch::{Switch, SwitchStats};
