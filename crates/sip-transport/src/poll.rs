//! The wait of the thread that owns the switch: `poll(2)` over the UDP
//! sockets it reads (and writes, when a send had to wait), plus a
//! [`Doorbell`] that other threads ring. The doorbell is the waker of the
//! channels that thread polls (stream messages, DNS answers, API requests):
//! a message sent into an empty channel rings it once, and the thread
//! wakes, so that nothing waits on a timer and nothing spins.

use std::io::ErrorKind;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::Duration;

/// Rung by other threads to wake [`Poller::wait`]; a waker for channels.
#[derive(Debug)]
pub struct Doorbell {
    ring: UnixDatagram,
    heard: UnixDatagram,
}

impl Doorbell {
    fn new() -> std::io::Result<Doorbell> {
        let (ring, heard) = UnixDatagram::pair()?;
        ring.set_nonblocking(true)?;
        heard.set_nonblocking(true)?;
        Ok(Doorbell { ring, heard })
    }

    /// Wakes the waiting thread (a ring already pending is enough).
    pub fn ring(&self) {
        // A full socket buffer means rings are pending: nothing is lost.
        let _ = self.ring.send(&[1]);
    }

    /// Takes every pending ring.
    fn silence(&self) {
        let mut buf = [0u8; 64];
        while self.heard.recv(&mut buf).is_ok() {}
    }
}

impl Wake for Doorbell {
    fn wake(self: Arc<Self>) {
        self.ring();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ring();
    }
}

/// What a descriptor is waited for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest {
    /// Datagrams to read.
    pub read: bool,
    /// Room to write.
    pub write: bool,
}

/// Waits on descriptors and a doorbell.
pub struct Poller {
    bell: Arc<Doorbell>,
    fds: Vec<libc::pollfd>,
}

impl Poller {
    /// A poller with its doorbell.
    pub fn new() -> std::io::Result<Poller> {
        let bell = Arc::new(Doorbell::new()?);
        let heard = libc::pollfd { fd: bell.heard.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        Ok(Poller { bell, fds: vec![heard] })
    }

    /// The waker that rings this poller's doorbell.
    pub fn waker(&self) -> Waker {
        Waker::from(self.bell.clone())
    }

    /// Sets what `fd` is waited for (nothing: no longer waited on).
    pub fn set(&mut self, fd: RawFd, interest: Interest) {
        let mut events = 0;
        if interest.read {
            events |= libc::POLLIN;
        }
        if interest.write {
            events |= libc::POLLOUT;
        }
        match self.fds.iter().position(|p| p.fd == fd) {
            Some(i) if events == 0 => {
                self.fds.remove(i);
            }
            Some(i) => self.fds[i].events = events,
            None if events == 0 => {}
            None => self.fds.push(libc::pollfd { fd, events, revents: 0 }),
        }
    }

    /// Waits until a descriptor is ready, the doorbell rings or `timeout`
    /// passes (rounded up to a millisecond; `None`: no limit). Then
    /// [`Poller::ready`] says which descriptors are ready.
    pub fn wait(&mut self, timeout: Option<Duration>) -> std::io::Result<()> {
        let ms = match timeout {
            None => -1,
            Some(t) => t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int,
        };
        for p in &mut self.fds {
            p.revents = 0;
        }
        // SAFETY: `fds` is a live array of pollfd of the length given.
        let n = unsafe { libc::poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return if e.kind() == ErrorKind::Interrupted { Ok(()) } else { Err(e) };
        }
        if self.fds[0].revents != 0 {
            self.bell.silence();
        }
        Ok(())
    }

    /// The descriptors the last [`Poller::wait`] found ready, with what
    /// they are ready for (an error or a hang-up counts as both).
    pub fn ready(&self) -> impl Iterator<Item = (RawFd, Interest)> + '_ {
        let err = libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;
        self.fds[1..].iter().filter(|p| p.revents != 0).map(move |p| {
            let read = p.revents & (libc::POLLIN | err) != 0;
            let write = p.revents & (libc::POLLOUT | err) != 0;
            (p.fd, Interest { read, write })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_ring_from_another_thread_ends_the_wait_and_a_ready_socket_is_named() {
        let mut p = Poller::new().expect("poller");
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        p.set(sock.as_raw_fd(), Interest { read: true, write: false });
        let waker = p.waker();
        let t0 = Instant::now();
        let ringer = std::thread::spawn(move || waker.wake());
        p.wait(Some(Duration::from_secs(10))).expect("wait");
        ringer.join().expect("ringer");
        assert!(t0.elapsed() < Duration::from_secs(5), "woken by the ring");
        assert_eq!(p.ready().count(), 0, "no datagram yet");
        // The ring was taken: the next wait runs to its timeout.
        p.wait(Some(Duration::from_millis(20))).expect("wait");
        assert!(t0.elapsed() >= Duration::from_millis(20));
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        tx.send_to(b"x", sock.local_addr().expect("addr")).expect("send");
        p.wait(Some(Duration::from_secs(10))).expect("wait");
        let ready: Vec<_> = p.ready().collect();
        assert_eq!(ready, [(sock.as_raw_fd(), Interest { read: true, write: false })]);
    }
}
