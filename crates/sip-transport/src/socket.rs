//! Socket construction with socket2: address reuse, buffer sizes, IPv6-only
//! for v6 sockets so that v4 and v6 can bind the same port.

use crate::TransportConfig;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use tracing::warn;

fn base(addr: SocketAddr, ty: Type, proto: Protocol) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

fn buffers(s: &Socket, cfg: &TransportConfig) {
    if let Err(e) = s.set_recv_buffer_size(cfg.recv_buffer) {
        warn!(error = %e, "could not set SO_RCVBUF");
    }
    if let Err(e) = s.set_send_buffer_size(cfg.send_buffer) {
        warn!(error = %e, "could not set SO_SNDBUF");
    }
}

/// A bound, non-blocking UDP socket.
pub fn udp_socket(
    addr: SocketAddr,
    cfg: &TransportConfig,
    reuse_port: bool,
) -> std::io::Result<std::net::UdpSocket> {
    let s = base(addr, Type::DGRAM, Protocol::UDP)?;
    #[cfg(unix)]
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    #[cfg(not(unix))]
    let _ = reuse_port;
    buffers(&s, cfg);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// A bound, listening, non-blocking TCP socket.
pub fn tcp_listener(
    addr: SocketAddr,
    cfg: &TransportConfig,
) -> std::io::Result<std::net::TcpListener> {
    let s = base(addr, Type::STREAM, Protocol::TCP)?;
    buffers(&s, cfg);
    s.set_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// A non-blocking TCP socket for an outbound connection to `remote`.
pub fn tcp_outbound(remote: SocketAddr, cfg: &TransportConfig) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(remote), Type::STREAM, Some(Protocol::TCP))?;
    s.set_nonblocking(true)?;
    s.set_nodelay(true)?;
    buffers(&s, cfg);
    Ok(s)
}
