//! Deterministic simulation of whole calls through the switch core: see
//! `run` for the loop, `world` for the deployment, `net` for the network
//! and the clock, `phone`, `carrier`, `callee` and `caller` for the user
//! agents, `oracle` for the checks.

pub mod callee;
pub mod caller;
pub mod carrier;
pub mod net;
pub mod oracle;
pub mod phone;
pub mod run;
pub mod sip;
pub mod ua;
pub mod world;

pub use ua::Action;
