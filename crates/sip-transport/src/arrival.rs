//! When a UDP datagram really arrived: the kernel's receive timestamp
//! (`SO_TIMESTAMPNS`, Linux), not the moment we read it. Under overload the
//! wait that matters is in the socket's receive buffer, before the receive
//! loop ever sees the datagram; the switch's admission control measures
//! the input queue delay from this arrival time, so that wait counts. Where
//! the option is missing the read time stands in (as it does, by the
//! kernel's doing, for the first datagrams after timestamping is switched
//! on: Linux enables it stack-wide through a deferred static key).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Asks the kernel to stamp every datagram `sock` receives. `false` when it
/// cannot (then [`stamp`] finds none).
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

/// The kernel's arrival stamp among the control messages of `msg`, as
/// `recvmsg`/`recvmmsg` filled them in.
#[cfg(target_os = "linux")]
pub(crate) fn stamp(msg: &libc::msghdr) -> Option<SystemTime> {
    let mut stamp = None;
    // SAFETY: the CMSG_* walk stays inside msg_control/msg_controllen as
    // the kernel set them; the data of an SCM_TIMESTAMPNS message is a
    // timespec, read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                let (s, ns) = (u64::try_from(ts.tv_sec), u32::try_from(ts.tv_nsec));
                if let (Ok(s), Ok(ns)) = (s, ns) {
                    stamp = UNIX_EPOCH.checked_add(Duration::new(s, ns));
                }
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    stamp
}

/// The arrival of a datagram read at `read` (now on the monotonic clock,
/// `wall` on the wall clock), as an [`Instant`]: the kernel's stamp moved
/// onto the monotonic clock, or `read` without one (or for a stamp in the
/// future, as a wall clock step can make).
pub(crate) fn arrival(read: Instant, wall: SystemTime, stamp: Option<SystemTime>) -> Instant {
    let age = stamp.and_then(|t| wall.duration_since(t).ok());
    age.and_then(|a| read.checked_sub(a)).unwrap_or(read)
}
