//! # registrar: REGISTER handling and the location service
//!
//! Sans-IO: no sockets, no clock reads, no database. Time comes in as
//! arguments (`now: Instant` for nonces and bans, `wall: Timestamp` for
//! binding expiry) and persistence goes through the [`BindingPersistence`]
//! trait that the server implements.
//!
//! - [`accounts`]: the in-memory directory of customers, domains (with
//!   aliases) and extensions (HA1 only), and the HA1 helpers.
//! - [`digest`]: Digest authentication (RFC 7616/8760, MD5 and SHA-256,
//!   `qop=auth`) with self-verifying nonces and `nc` replay protection.
//! - [`ratelimit`]: bans for sources that keep failing authentication.
//! - [`location`]: the [`LocationStore`] of bindings per AOR.
//! - [`register`]: the [`Registrar`], RFC 3261 10.3 with RFC 5626
//!   instance/reg-id replacement.
#![deny(missing_docs)]

pub mod accounts;
pub mod digest;
pub mod location;
pub mod ratelimit;
pub mod register;
mod util;

pub use accounts::{extension_with_password, ha1_md5, ha1_sha256, Accounts};
pub use digest::{Algorithm, DigestAuth, DigestConfig, Outcome};
pub use location::{BindingPersistence, Change, Location, LocationStore, Persistence};
pub use ratelimit::{AuthLimiter, BanAction, BanConfig};
pub use register::{Registrar, RegistrarConfig};
