//! A network namespace of the test's own, holding only a loopback
//! interface, for tests whose peers would otherwise use the machine's other
//! addresses: Chromium's WebRTC gathers a socket on every interface (and
//! tries each against the remote candidates), pjsip puts the host's address
//! in its SDP. In the private namespace 127.0.0.1 is the only address there
//! is, so every packet of the test stays on a loopback that nothing else
//! shares.
//!
//! [`enter`] moves the calling thread (a test's own thread) into a new
//! namespace; the server, SIPp, node and Chromium it starts afterwards, the
//! threads it spawns and the sockets it opens all live there. Other tests,
//! on other threads, stay where they were. Needs `CAP_SYS_ADMIN` (root, as
//! `.ci/run` is): without it the test fails, saying so, rather than run on
//! the shared network.

/// Moves the calling thread into a new network namespace and brings its
/// `lo` up. Call it first in a test, before any socket or child process.
pub fn enter() {
    // SAFETY: unshare takes flags only; CLONE_NEWNET affects this thread.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert!(
        r == 0,
        "cannot create a network namespace (unshare(CLONE_NEWNET): {}); \
         this test needs CAP_SYS_ADMIN (run as root, as .ci/run does)",
        std::io::Error::last_os_error()
    );
    loopback_up().unwrap_or_else(|e| panic!("cannot bring lo up in the new namespace: {e}"));
}

/// `ip link set lo up`, by ioctl (iproute2 may be missing).
fn loopback_up() -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: a plain socket call; the descriptor is owned (closed) below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor of ours.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass,
    // which lives across both calls.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
