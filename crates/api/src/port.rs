//! [`SwitchPort`]: the switch core as the API sees it. The API never holds
//! the switch or reads its call state: it sends a [`switch::Command`] and
//! waits for its [`switch::CommandOutcome`], and asks for a [`Snapshot`] of
//! the counters at scrape time. The core runs on another thread (the shell
//! owns it), so both calls are futures that may fail with [`Unavailable`]
//! (the core is gone, overloaded, or did not answer in time).
//!
//! [`channel`] is a ready-made port over a tokio channel for the shell:
//! it receives [`PortRequest`]s, feeds each command to the switch with a
//! fresh [`switch::CommandId`], and answers when the matching
//! `Event::CommandDone` comes out.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A boxed, sendable future (what the port's methods return).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The switch core did not answer: stopped, its queue full, or too slow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unavailable;

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the switch core is unavailable")
    }
}

impl std::error::Error for Unavailable {}

/// What the switch counts and holds, read at one instant (for `/metrics`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Everything counted since the switch started ([`switch::Switch::counters`]).
    pub counters: switch::Counters,
    /// What it holds now ([`switch::Switch::stats`]): calls, transactions,
    /// bindings...
    pub stats: switch::SwitchStats,
}

/// The switch core as the API sees it: commands in, outcomes out; a
/// snapshot of counters.
pub trait SwitchPort: Send + Sync + 'static {
    /// Carries out one command; resolves with its outcome.
    fn command(
        &self,
        command: switch::Command,
    ) -> BoxFuture<Result<switch::CommandOutcome, Unavailable>>;
    /// The counters and holdings now.
    fn snapshot(&self) -> BoxFuture<Result<Snapshot, Unavailable>>;
}

/// A request from a [`ChannelPort`] to the shell that owns the switch.
#[derive(Debug)]
pub enum PortRequest {
    /// Feed `command` to the switch (`Input::Command` with a fresh id) and
    /// send its outcome (`Event::CommandDone` with that id) to `reply`.
    Command {
        /// What to do.
        command: switch::Command,
        /// Where the outcome goes (the API may have given up: ignore errors).
        reply: oneshot::Sender<switch::CommandOutcome>,
    },
    /// Send `Snapshot { counters: sw.counters(), stats: sw.stats() }`.
    Snapshot {
        /// Where it goes.
        reply: oneshot::Sender<Snapshot>,
    },
}

/// A [`SwitchPort`] over a bounded channel: never blocks; a full queue or
/// no answer within the timeout is [`Unavailable`].
#[derive(Clone, Debug)]
pub struct ChannelPort {
    tx: mpsc::Sender<PortRequest>,
    timeout: Duration,
}

/// A port and the receiving end for the shell: at most `capacity` requests
/// waiting; each waits at most `timeout` for its answer.
pub fn channel(capacity: usize, timeout: Duration) -> (ChannelPort, mpsc::Receiver<PortRequest>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (ChannelPort { tx, timeout }, rx)
}

impl ChannelPort {
    fn ask<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> PortRequest,
    ) -> BoxFuture<Result<T, Unavailable>> {
        let (reply, answer) = oneshot::channel();
        let sent = self.tx.try_send(make(reply)).is_ok();
        let timeout = self.timeout;
        Box::pin(async move {
            if !sent {
                return Err(Unavailable);
            }
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(v)) => Ok(v),
                _ => Err(Unavailable),
            }
        })
    }
}

impl SwitchPort for ChannelPort {
    fn command(
        &self,
        command: switch::Command,
    ) -> BoxFuture<Result<switch::CommandOutcome, Unavailable>> {
        self.ask(|reply| PortRequest::Command { command, reply })
    }

    fn snapshot(&self) -> BoxFuture<Result<Snapshot, Unavailable>> {
        self.ask(|reply| PortRequest::Snapshot { reply })
    }
}
