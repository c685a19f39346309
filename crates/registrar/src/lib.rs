//! # registrar: REGISTER handling and the location service
//!
//! Sans-IO and single-owner: no sockets, no clock reads, no database, no
//! locks, no OS randomness. One owner (the switch's state machine) holds the
//! [`Registrar`] by value and drives it through `&mut self`:
//!
//! - time comes in as arguments (`now: Instant` for nonces and bans,
//!   `wall: Timestamp` for binding expiry);
//! - randomness (the nonce secret, the nonces' random bytes, To tags) comes
//!   from RNGs the owner seeds at construction ([`Registrar::new`] with a
//!   seed, [`Registrar::with_secret`]): the same seed and the same inputs give
//!   byte-identical outputs;
//! - persistence is an output: every binding change to store durably is
//!   queued as a [`BindingChange`], which the owner drains with
//!   [`Registrar::poll_change`] (or [`LocationStore::poll_change`]) and writes
//!   to its database; [`LocationStore::load`] restores the bindings at
//!   start-up.
//!
//! - [`accounts`]: the in-memory directory of customers, domains (with
//!   aliases) and extensions (HA1 only), and the HA1 helpers.
//! - [`digest`]: Digest authentication (RFC 7616/8760, MD5 and SHA-256,
//!   `qop=auth`) with self-verifying nonces and `nc` replay protection.
//! - [`ratelimit`]: bans for sources that keep failing authentication.
//! - [`security`]: the events of failed authentications and bans, queued
//!   for the owner to log ([`Registrar::poll_security`]).
//! - [`location`]: the [`LocationStore`] of bindings per AOR, with the stream
//!   connection of each and whether it has closed (RFC 5626 flow failure).
//! - [`register`]: the [`Registrar`], RFC 3261 10.3 with RFC 5626
//!   instance/reg-id replacement; it owns the accounts, the location store,
//!   the digest verifier and the ban list.
#![deny(missing_docs)]

pub mod accounts;
pub mod digest;
pub mod location;
pub mod ratelimit;
pub mod register;
pub mod security;
mod util;

pub use accounts::{extension_with_password, ha1_md5, ha1_sha256, Accounts};
pub use digest::{Algorithm, DigestAuth, DigestConfig, Outcome};
pub use location::{BindingChange, Change, Location, LocationStore};
pub use ratelimit::{AuthLimiter, BanAction, BanConfig, Verdict};
pub use register::{Registrar, RegistrarConfig};
pub use security::SecurityEvent;
