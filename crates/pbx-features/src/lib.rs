//! # pbx-features: what office users expect around ring groups
//!
//! The PBX features that live around the fork engine, as pure code the
//! switch core composes: busy lamps (BLF), call pickup, member login codes
//! and the missed-groupcall notice. Nothing here reads a clock, a socket or
//! the OS random source: time is passed in, tags come from the caller.
//!
//! - **Busy lamps**: [`dialog_info`] writes RFC 4235
//!   `application/dialog-info+xml` documents; [`subscribe`] reads a
//!   `SUBSCRIBE` for the `dialog` package and says how to answer it;
//!   [`Notifier`] (module [`notifier`]) holds every subscription (RFC 6665)
//!   and the dialogs of every [`Watched`] resource, and decides every NOTIFY.
//! - **Feature codes** ([`codes`]): per-domain `*8` (group pickup),
//!   `**<ext>` (directed pickup) and `*45<group>` (login toggle), a
//!   classifier of dialed user parts, and the clash checks.
//! - **Pickup** ([`pickup`], [`replaces`]): which ringing call a pickup
//!   takes (oldest ringing call of the picker's groups, a call ringing a
//!   given extension, or the early dialog a `Replaces` header names, RFC
//!   3891), over a snapshot of ringing calls; same customer only.
//! - **Missed groupcall** ([`missed`]): the `groupcall_missed` webhook
//!   payload, derived from the records.
//!
//! ## The notifier's contract (quinn-proto style)
//!
//! [`Notifier<D>`] is one `&mut self` machine. `D` is the switch's dialog
//! type: the notifier keeps each subscription's dialog and hands it back
//! with every NOTIFY, and never looks inside it, so building and sending
//! in-dialog requests stays the switch's one mechanism.
//!
//! - **Inputs**, with the current `now` where time matters:
//!   - [`Notifier::handle_new`]`(now, request, new)` and
//!     [`Notifier::handle_refresh`]`(now, request)`: a SUBSCRIBE read by
//!     [`SubscribeRequest::from_message`], after the switch authenticated it
//!     (like an INVITE) and, for a new one, resolved its Request-URI to a
//!     [`Watched`] resource of the subscriber's customer. They return the
//!     [`SubscribeAnswer`] to send (200 with Expires, or a [`Refusal`]'s
//!     status and header).
//!   - [`Notifier::handle_dialog`]`(now, watched, entry)`: a dialog of an
//!     extension or ring group began or changed.
//!   - [`Notifier::handle_notify_outcome`]`(now, id, outcome)`: how a NOTIFY's
//!     client transaction ended (final response, timeout, transport error).
//!   - [`Notifier::handle_subscriber_gone`]`(gone)`: a connection closed, a
//!     binding or a whole AOR unregistered.
//!   - [`Notifier::handle_resource_gone`]`(watched)`: an extension or group
//!     was deleted.
//!   - [`Notifier::handle_timeout`]`(now)`: the deadline has come.
//! - **Outputs**, drained after every input:
//!   - [`Notifier::poll_notify`]: the NOTIFYs to send, in order, each a
//!     [`Notify`] intent (Event, Subscription-State, body, the dialog);
//!   - [`Notifier::poll_timeout`]: when `handle_timeout` is due.
//! - **Getters** ([`Notifier::len`], [`Notifier::watchers`],
//!   [`Notifier::counters`], [`Notifier::dialog_mut`]) change no state the
//!   notifier decides on.
//!
//! Main types: [`Notifier`], [`DialogInfo`], [`SubscribeRequest`],
//! [`FeatureCodes`], [`RingingCall`], [`Replaces`], [`GroupcallMissed`].
#![deny(missing_docs)]

pub mod codes;
pub mod dialog_info;
mod header_params;
pub mod missed;
pub mod notifier;
pub mod pickup;
pub mod replaces;
pub mod subscribe;
pub mod watched;

pub use codes::{CodeError, Dialable, FeatureCode, FeatureCodeSettings, FeatureCodes};

pub use dialog_info::{
    DialogEntry, DialogIds, DialogInfo, DialogState, Direction, DocumentState, Identity,
    Termination, TerminationEvent,
};
pub use missed::{GroupcallMissed, MemberOutcome, RungMember};
pub use notifier::{
    NewSubscription, Notifier, NotifierCounters, NotifierSettings, Notify, NotifyDialog,
    NotifyOutcome, SettingsError, Subscriber, SubscriberGone, SubscriptionId,
};
pub use pickup::{
    choose as choose_pickup, CallPhase, Picker, Pickup, PickupVerdict, RingingCall, RingingLeg,
};
pub use replaces::Replaces;
pub use subscribe::{
    Refusal, SubscribeAnswer, SubscribeRequest, SubscriptionKey, SubscriptionState,
    TerminationReason,
};
pub use watched::Watched;
