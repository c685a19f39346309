//! UDP in batches, for the one thread that owns the switch.
//!
//! [`UdpReceiver`] reads up to [`BATCH`] datagrams per `recvmmsg(2)`, each
//! with the kernel's arrival stamp (`arrival.rs`), into receive buffers
//! it keeps: the only allocation per datagram is the copy that becomes
//! the message's own [`Bytes`] (a message kept by a transaction must not
//! pin a shared buffer). [`Outbox`] takes everything the switch sends:
//! datagrams wait in a queue until [`Outbox::flush`] writes them with
//! `sendmmsg(2)`, once the batch that caused them has been handled;
//! stream messages go at once. No task, channel or wake-up stands between
//! the socket and the switch.
//!
//! GSO (`UDP_SEGMENT`) is not used: it sends one buffer as equal-sized
//! segments to one destination, and a switch's datagrams differ in size
//! and mostly in destination. Elsewhere than Linux the same types read and
//! write one datagram per system call.

use crate::{fail, inbound, stream, Inbound, Inner};
use bytes::Bytes;
use sip_message::{Message, Peer, Transport};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tracing::debug;

/// Datagrams read, or written, per system call at most.
pub const BATCH: usize = 32;
/// Room per datagram: the largest a UDP datagram can be.
const SLOT: usize = 65_536;

/// One datagram read: where it sits in its slot and what the kernel said.
#[derive(Clone, Copy)]
struct Got {
    len: usize,
    from: Option<SocketAddr>,
    stamp: Option<SystemTime>,
    truncated: bool,
}

/// Reads the transport's UDP sockets in batches.
pub struct UdpReceiver {
    inner: Arc<Inner>,
    /// Every UDP socket, with the address it is bound to.
    sockets: Vec<(Arc<UdpSocket>, SocketAddr)>,
    /// [`BATCH`] slots of [`SLOT`] bytes (only the pages datagrams reach
    /// are ever touched).
    bufs: Vec<u8>,
    got: Vec<Got>,
    #[cfg(target_os = "linux")]
    names: Vec<libc::sockaddr_storage>,
    #[cfg(target_os = "linux")]
    controls: Vec<[u64; 8]>,
}

impl UdpReceiver {
    pub(crate) fn new(inner: Arc<Inner>) -> UdpReceiver {
        let sockets =
            inner.udp.iter().flat_map(|e| e.sockets.iter().map(|s| (s.clone(), e.local))).collect();
        UdpReceiver {
            inner,
            sockets,
            bufs: vec![0; BATCH * SLOT],
            got: Vec::with_capacity(BATCH),
            // SAFETY: sockaddr_storage is plain data; all zeroes is valid.
            #[cfg(target_os = "linux")]
            names: vec![unsafe { std::mem::zeroed() }; BATCH],
            #[cfg(target_os = "linux")]
            controls: vec![[0; 8]; BATCH],
        }
    }

    /// The descriptors to wait on for reading.
    pub fn fds(&self) -> Vec<RawFd> {
        self.sockets.iter().map(|(s, _)| s.as_raw_fd()).collect()
    }

    /// Reads what socket `fd` holds, up to [`BATCH`] datagrams, and hands
    /// each to `each` in arrival order, with how many were read behind it.
    /// Returns how many were read: fewer than [`BATCH`] means the socket
    /// was empty when read.
    pub fn recv(&mut self, fd: RawFd, mut each: impl FnMut(Inbound, usize)) -> usize {
        let Some(i) = self.sockets.iter().position(|(s, _)| s.as_raw_fd() == fd) else {
            return 0;
        };
        self.got.clear();
        if let Err(e) = self.read(i) {
            if e.kind() != std::io::ErrorKind::WouldBlock {
                // ICMP errors surface here on some systems.
                debug!(error = %e, "udp recv error");
            }
            return 0;
        }
        let (read, wall) = (Instant::now(), SystemTime::now());
        let local = self.sockets[i].1;
        for (k, got) in self.got.iter().enumerate() {
            let Some(remote) = got.from else { continue };
            if got.truncated {
                self.inner.stats.unparsable.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let at = crate::arrival::arrival(read, wall, got.stamp);
            let bytes = Bytes::copy_from_slice(&self.bufs[k * SLOT..k * SLOT + got.len]);
            let peer = Peer { transport: Transport::Udp, remote, local, conn: None };
            let behind = self.got.len() - k - 1;
            each(inbound(&self.inner, bytes, peer, at), behind);
        }
        self.got.len()
    }

    /// One `recvmmsg` into the slots; what each holds into `got`.
    #[cfg(target_os = "linux")]
    fn read(&mut self, i: usize) -> std::io::Result<()> {
        use std::mem::{size_of, size_of_val, zeroed};
        let fd = self.sockets[i].0.as_raw_fd();
        // SAFETY: every pointer in the headers points into `bufs`, `names`
        // and `controls`, which live through the call and hold BATCH
        // slots of the sizes given; the kernel writes at most that much.
        // The control buffers are u64-aligned as cmsghdr needs.
        let n = unsafe {
            let mut iov: [libc::iovec; BATCH] = zeroed();
            let mut hdrs: [libc::mmsghdr; BATCH] = zeroed();
            let base = self.bufs.as_mut_ptr();
            for k in 0..BATCH {
                iov[k] = libc::iovec { iov_base: base.add(k * SLOT).cast(), iov_len: SLOT };
                let h = &mut hdrs[k].msg_hdr;
                h.msg_name = (&mut self.names[k] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_iov = &mut iov[k];
                h.msg_iovlen = 1;
                h.msg_control = self.controls[k].as_mut_ptr().cast();
                h.msg_controllen = size_of_val(&self.controls[k]) as _;
            }
            let flags = libc::MSG_DONTWAIT;
            let n = libc::recvmmsg(fd, hdrs.as_mut_ptr(), BATCH as _, flags, std::ptr::null_mut());
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for h in &hdrs[..n as usize] {
                let name = *h.msg_hdr.msg_name.cast::<libc::sockaddr_storage>();
                let from = socket2::SockAddr::new(name, h.msg_hdr.msg_namelen).as_socket();
                self.got.push(Got {
                    len: h.msg_len as usize,
                    from,
                    stamp: crate::arrival::stamp(&h.msg_hdr),
                    truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                });
            }
            n
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    }

    /// One `recv_from` per datagram, until the socket is empty.
    #[cfg(not(target_os = "linux"))]
    fn read(&mut self, i: usize) -> std::io::Result<()> {
        let sock = self.sockets[i].0.clone();
        for k in 0..BATCH {
            match sock.recv_from(&mut self.bufs[k * SLOT..(k + 1) * SLOT]) {
                Ok((len, from)) => {
                    self.got.push(Got { len, from: Some(from), stamp: None, truncated: false })
                }
                Err(e) if k > 0 && e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A datagram waiting to be written.
struct Outgoing {
    /// Index of the UDP endpoint to send from.
    endpoint: usize,
    to: socket2::SockAddr,
    bytes: Bytes,
    token: u64,
    peer: Peer,
}

/// Everything the switch sends: datagrams queued for [`Outbox::flush`],
/// stream messages at once.
pub struct Outbox {
    inner: Arc<Inner>,
    queue: Vec<Outgoing>,
}

impl Outbox {
    pub(crate) fn new(inner: Arc<Inner>) -> Outbox {
        Outbox { inner, queue: Vec::with_capacity(BATCH) }
    }

    /// Sends `msg` to `peer` (see [`crate::SipTransport::send_request`] for
    /// a request too large for UDP). A datagram waits for the next flush;
    /// a full queue is flushed at once.
    pub fn send(&mut self, peer: &Peer, msg: &Message, token: u64) {
        match crate::route(&self.inner, peer, msg) {
            crate::Route::Udp(bytes) => self.queue_datagram(peer, bytes, token),
            crate::Route::Stream { peer, bytes, udp_fallback } => {
                stream::send(&self.inner, &peer, bytes, token, udp_fallback)
            }
        }
    }

    /// Sends `bytes` to `peer` as they are (see
    /// [`crate::SipTransport::send_bytes`]): a datagram waits for the next
    /// flush, a stream message goes at once.
    pub fn send_bytes(&mut self, peer: &Peer, bytes: Bytes, token: u64) {
        match peer.transport {
            Transport::Udp => self.queue_datagram(peer, bytes, token),
            _ => stream::send(&self.inner, peer, bytes, token, None),
        }
    }

    fn queue_datagram(&mut self, peer: &Peer, bytes: Bytes, token: u64) {
        let Some(endpoint) = crate::udp_endpoint(&self.inner, peer) else {
            fail(&self.inner, token, peer, "no UDP socket for this address family".into());
            return;
        };
        let to = socket2::SockAddr::from(peer.remote);
        self.queue.push(Outgoing { endpoint, to, bytes, token, peer: *peer });
        if self.queue.len() >= BATCH {
            self.flush();
        }
    }

    /// `true` when datagrams wait to be written.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Writes the queued datagrams, [`BATCH`] per system call. `None` when
    /// all are written; else the socket whose send buffer is full: flush
    /// again once it is writable (the rest wait, in order).
    pub fn flush(&mut self) -> Option<RawFd> {
        let mut done = 0;
        while done < self.queue.len() {
            let endpoint = self.queue[done].endpoint;
            let sock = &self.inner.udp[endpoint].sockets[0];
            let run = self.queue[done..]
                .iter()
                .take(BATCH)
                .take_while(|o| o.endpoint == endpoint)
                .count();
            match write(sock, &self.queue[done..done + run]) {
                Ok(n) => {
                    self.inner.stats.sent.fetch_add(n as u64, Ordering::Relaxed);
                    done += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.queue.drain(..done);
                    return Some(sock.as_raw_fd());
                }
                Err(e) => {
                    let o = &self.queue[done];
                    fail(&self.inner, o.token, &o.peer, e.to_string());
                    done += 1;
                }
            }
        }
        self.queue.clear();
        None
    }
}

/// Writes `items` (at most [`BATCH`], one socket) with one `sendmmsg`:
/// how many the kernel took (at least one), or the error of the first.
#[cfg(target_os = "linux")]
fn write(sock: &UdpSocket, items: &[Outgoing]) -> std::io::Result<usize> {
    use std::mem::zeroed;
    // SAFETY: the headers point at the items' bytes and addresses, which
    // live through the call; the kernel only reads them.
    let n = unsafe {
        let mut iov: [libc::iovec; BATCH] = zeroed();
        let mut hdrs: [libc::mmsghdr; BATCH] = zeroed();
        for (k, o) in items.iter().enumerate() {
            iov[k] = libc::iovec { iov_base: o.bytes.as_ptr() as *mut _, iov_len: o.bytes.len() };
            let h = &mut hdrs[k].msg_hdr;
            h.msg_name = o.to.as_ptr() as *mut _;
            h.msg_namelen = o.to.len();
            h.msg_iov = &mut iov[k];
            h.msg_iovlen = 1;
        }
        libc::sendmmsg(sock.as_raw_fd(), hdrs.as_mut_ptr(), items.len() as _, 0)
    };
    match n {
        n if n < 0 => Err(std::io::Error::last_os_error()),
        0 => Err(std::io::ErrorKind::WouldBlock.into()),
        n => Ok(n as usize),
    }
}

/// One `send_to` per datagram.
#[cfg(not(target_os = "linux"))]
fn write(sock: &UdpSocket, items: &[Outgoing]) -> std::io::Result<usize> {
    let mut n = 0;
    for o in items {
        let to = o.to.as_socket().ok_or(std::io::ErrorKind::InvalidInput)?;
        match sock.send_to(&o.bytes, to) {
            Ok(_) => n += 1,
            Err(e) if n == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(n)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use crate::{SipTransport, TransportConfig};
    use std::time::{Duration, Instant};
    use tokio::sync::mpsc;

    async fn transport() -> SipTransport {
        let addr = "127.0.0.1:0".parse().expect("addr");
        let cfg = TransportConfig { udp: vec![addr], ..Default::default() };
        let (tx, _rx) = mpsc::channel(4);
        let (ntx, _nrx) = mpsc::unbounded_channel();
        SipTransport::bind(cfg, tx, ntx).await.expect("bind")
    }

    #[tokio::test]
    async fn datagrams_come_in_one_batch_each_with_the_kernels_arrival_time() {
        let t = transport().await;
        let server = t.local_addrs()[0].1;
        let mut rx = t.udp_receiver();
        let fd = rx.fds()[0];
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        // Linux switches receive timestamping on for the whole stack lazily
        // (a deferred static key) the first time a socket asks: until then
        // a datagram is stamped when it is read. So a few tries at most.
        let mut waits = Vec::new();
        for _ in 0..20 {
            let before = Instant::now();
            for i in 0..3 {
                tx.send_to(format!("hello {i}").as_bytes(), server).expect("send");
            }
            // Left in the socket buffer a while: the stamp is the arrival.
            std::thread::sleep(Duration::from_millis(30));
            let mut got = Vec::new();
            let n = rx.recv(fd, |inb, behind| got.push((inb, behind)));
            assert_eq!(n, 3, "one read takes the three");
            for (i, (inb, behind)) in got.iter().enumerate() {
                assert_eq!(&inb.bytes[..], format!("hello {i}").as_bytes(), "in order");
                assert_eq!(*behind, 2 - i);
                assert_eq!(inb.peer.remote, tx.local_addr().expect("addr"));
                assert_eq!(inb.peer.local, server);
                // The kernel's clock reading may be a little coarser than ours.
                assert!(inb.received_at + Duration::from_millis(10) >= before);
            }
            assert_eq!(rx.recv(fd, |_, _| panic!("nothing more")), 0);
            let waited = got[0].0.received_at.elapsed();
            if waited >= Duration::from_millis(25) {
                return; // the buffer wait counts
            }
            waits.push(waited);
        }
        panic!("never stamped at arrival: waits {waits:?}");
    }

    #[tokio::test]
    async fn the_outbox_writes_its_queue_in_order_at_the_flush() {
        let t = transport().await;
        let server = t.local_addrs()[0].1;
        let mut out = t.outbox();
        let peer_sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        peer_sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let remote = peer_sock.local_addr().expect("addr");
        let peer = sip_message::Peer {
            transport: sip_message::Transport::Udp,
            remote,
            local: server,
            conn: None,
        };
        let n = crate::BATCH + 5; // one full batch goes at once, the rest at the flush
        for i in 0..n {
            let m = sip_message::Message::response(200, "OK")
                .header(sip_message::HeaderName::CallId, format!("c{i}"))
                .build();
            out.send(&peer, &m, i as u64);
        }
        assert!(!out.is_empty(), "the last five wait");
        assert_eq!(out.flush(), None, "all written");
        assert!(out.is_empty());
        let mut buf = [0u8; 2048];
        for i in 0..n {
            let (len, from) = peer_sock.recv_from(&mut buf).expect("datagram");
            assert_eq!(from, server);
            let m = sip_message::Message::parse(bytes::Bytes::copy_from_slice(&buf[..len]))
                .expect("parse");
            assert_eq!(m.call_id().expect("call-id"), format!("c{i}").as_bytes());
        }
        assert_eq!(t.stats().sent.load(std::sync::atomic::Ordering::Relaxed), n as u64);
    }
}
