//! When a UDP datagram really arrived: the kernel's receive timestamp
//! (`SO_TIMESTAMPNS`, Linux), not the moment we read it. Under overload the
//! wait that matters is in the socket's receive buffer, before the receive
//! loop ever sees the datagram; the switch's admission control measures
//! the input queue delay from this arrival time, so that wait counts. Where
//! the option is missing the read time stands in (as it does, by the
//! kernel's doing, for the first datagrams after timestamping is switched
//! on: Linux enables it stack-wide through a deferred static key).

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Asks the kernel to stamp every datagram `sock` receives. `false` when it
/// cannot (then [`recv_from`] gives no stamp).
#[cfg(target_os = "linux")]
pub(crate) fn enable(sock: &std::net::UdpSocket) -> bool {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and an int option of its size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    r == 0
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn enable(_sock: &std::net::UdpSocket) -> bool {
    false
}

/// One datagram into `buf`: its length, source and the kernel's arrival
/// time (when stamped). Non-blocking, like `recv_from`.
#[cfg(target_os = "linux")]
pub(crate) fn recv_from(
    fd: std::os::fd::RawFd,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Option<SystemTime>)> {
    use std::mem::{size_of, size_of_val, zeroed};
    // SAFETY: every pointer handed to recvmsg points into a live local of
    // the stated size; the control buffer is u64-aligned as cmsghdr needs;
    // the CMSG_* walk stays inside msg_controllen as the kernel set it.
    unsafe {
        let mut storage: libc::sockaddr_storage = zeroed();
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let mut control = [0u64; 8];
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = (&mut storage as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control) as _;
        let n = libc::recvmsg(fd, &mut msg, 0);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let addr =
            socket2::SockAddr::new(storage, msg.msg_namelen).as_socket().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "not an IP source")
            })?;
        let mut stamp = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                let (s, ns) = (u64::try_from(ts.tv_sec), u32::try_from(ts.tv_nsec));
                if let (Ok(s), Ok(ns)) = (s, ns) {
                    stamp = UNIX_EPOCH.checked_add(Duration::new(s, ns));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        Ok((n as usize, addr, stamp))
    }
}

/// The arrival of a datagram read at `read` (now), as an [`Instant`]: the
/// kernel's stamp moved onto the monotonic clock, or `read` without one (or
/// for a stamp in the future, as a wall clock step can make).
pub(crate) fn arrival(read: Instant, stamp: Option<SystemTime>) -> Instant {
    let age = stamp.and_then(|t| SystemTime::now().duration_since(t).ok());
    age.and_then(|a| read.checked_sub(a)).unwrap_or(read)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn datagrams_come_with_the_kernels_arrival_time() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        assert!(enable(&rx), "SO_TIMESTAMPNS");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        // Linux switches receive timestamping on for the whole stack lazily
        // (a deferred static key) the first time a socket asks: until then
        // a datagram is stamped when it is read. So a few tries at most.
        let mut waits = Vec::new();
        for _ in 0..20 {
            let before = SystemTime::now();
            tx.send_to(b"hello", rx.local_addr().expect("addr")).expect("send");
            // Left in the socket buffer a while: the stamp is the arrival.
            std::thread::sleep(Duration::from_millis(30));
            let mut buf = [0u8; 64];
            let (n, from, stamp) = recv_from(rx.as_raw_fd(), &mut buf).expect("recv");
            assert_eq!((&buf[..n], from), (&b"hello"[..], tx.local_addr().expect("addr")));
            let stamp = stamp.expect("stamped");
            // The kernel's clock reading may be a little coarser than ours.
            assert!(stamp >= before - Duration::from_millis(10), "{stamp:?} {before:?}");
            let read = Instant::now();
            let waited = read - arrival(read, Some(stamp));
            if waited >= Duration::from_millis(25) {
                return; // the buffer wait counts
            }
            waits.push(waited);
        }
        panic!("never stamped at arrival: waits {waits:?}");
    }
}
