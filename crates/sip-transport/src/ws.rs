//! SIP over WebSocket (RFC 7118), on accepted connections (plain or after
//! TLS): the HTTP upgrade must offer the `sip` subprotocol (else 400), and
//! then each text or binary WebSocket message is one SIP message, both ways:
//! no stream framing. WebSocket pings are answered by tungstenite.

use crate::stream::{closed, register, release_ip, Conn};
use crate::{fail, inbound, tls, Inner};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tracing::debug;

/// The WebSocket subprotocol of SIP (RFC 7118 4.1).
const SUBPROTOCOL: &str = "sip";

/// Whether the `Sec-WebSocket-Protocol` values of an upgrade request offer
/// the `sip` subprotocol (a comma-separated list, in one header or many).
pub(crate) fn offers_sip<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> bool {
    values.into_iter().any(|v| {
        v.split(|b| *b == b',').any(|p| p.trim_ascii().eq_ignore_ascii_case(SUBPROTOCOL.as_bytes()))
    })
}

/// The handshake answer: 101 with `Sec-WebSocket-Protocol: sip`, or 400
/// when the client did not offer it.
// The signature is tungstenite's `Callback`.
#[allow(clippy::result_large_err)]
fn negotiate(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let values = req.headers().get_all("sec-websocket-protocol");
    if !offers_sip(values.iter().map(|v| v.as_bytes())) {
        let mut refusal = ErrorResponse::new(Some("the sip subprotocol is required".into()));
        *refusal.status_mut() = StatusCode::BAD_REQUEST;
        return Err(refusal);
    }
    resp.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static(SUBPROTOCOL));
    Ok(resp)
}

/// Initial read buffer of a WebSocket connection.
const WS_READ_BUFFER: usize = 4096;
/// Most bytes queued for a WebSocket peer that does not read.
const WS_MAX_WRITE_BUFFER: usize = 1 << 20;

/// Runs the WebSocket handshake on `stream` (bounded in time), then the
/// connection until either side closes it.
pub(crate) async fn serve<S>(inner: Arc<Inner>, stream: S, conn: Conn)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let max = Some(inner.cfg.max_message);
    // tungstenite's defaults (128 KiB read and 128 KiB write buffer per
    // connection) cost ~130 kB per held browser phone (tests/bench/conns.sh);
    // SIP messages are small: a 4 KiB read buffer grows for a larger one,
    // each message is written at once, and a peer that stops reading is
    // cut off past 1 MiB queued.
    let config = WebSocketConfig::default()
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(WS_MAX_WRITE_BUFFER);
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, negotiate, Some(config));
    let ws = match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            debug!(peer = %conn.peer, error = %e, "WebSocket handshake failed");
            release_ip(&inner, conn.peer.remote);
            return;
        }
        Err(_) => {
            debug!(peer = %conn.peer, "WebSocket handshake timed out");
            release_ip(&inner, conn.peer.remote);
            return;
        }
    };
    let mut rx = register(&inner, conn);
    let (mut sink, mut messages) = ws.split();
    let peer = conn.peer;
    let winner = inner.clone();
    let writer = tokio::spawn(async move {
        while let Some((b, token)) = rx.recv().await {
            // SIP is text; a body that is not UTF-8 goes as a binary message.
            let msg = match Utf8Bytes::try_from(b.clone()) {
                Ok(text) => Message::Text(text),
                Err(_) => Message::Binary(b),
            };
            if let Err(e) = sink.send(msg).await {
                fail(&winner, token, &peer, e.to_string());
                break;
            }
            winner.stats.sent.fetch_add(1, Ordering::Relaxed);
        }
        let _ = sink.close().await;
    });
    let mut shutdown = inner.shutdown.clone();
    loop {
        let next = tokio::select! {
            r = tokio::time::timeout(inner.cfg.tcp_idle_timeout, messages.next()) => r,
            _ = shutdown.changed() => break,
        };
        let bytes: Bytes = match next {
            Err(_) => {
                debug!(%peer, "idle timeout");
                break;
            }
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) => break,
            Ok(Some(Err(e))) => {
                debug!(%peer, error = %e, "WebSocket read error");
                break;
            }
            Ok(Some(Ok(Message::Text(t)))) => t.into(),
            Ok(Some(Ok(Message::Binary(b)))) => b,
            Ok(Some(Ok(_))) => continue,
        };
        // A message of nothing but CRLFs is a keep-alive, not SIP.
        if bytes.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            continue;
        }
        if inner.inbound.send(inbound(&inner, bytes, peer, Instant::now())).await.is_err() {
            break;
        }
    }
    closed(&inner, conn);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subprotocol_must_be_offered() {
        assert!(offers_sip([&b"sip"[..]]));
        assert!(offers_sip([&b"chat, SIP"[..]]));
        assert!(offers_sip([&b"chat"[..], &b" sip "[..]]));
        assert!(!offers_sip([&b"chat, sipx"[..]]));
        assert!(!offers_sip(std::iter::empty()));
    }

    #[test]
    fn refusal_is_400_and_acceptance_names_sip() {
        let req = |proto: Option<&str>| {
            let mut b = Request::builder().uri("/");
            if let Some(p) = proto {
                b = b.header("Sec-WebSocket-Protocol", p);
            }
            b.body(()).expect("request")
        };
        let refused = negotiate(&req(None), Response::new(())).expect_err("refused");
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        let ok = negotiate(&req(Some("sip")), Response::new(())).expect("accepted");
        assert_eq!(ok.headers()["sec-websocket-protocol"], "sip");
    }
}
