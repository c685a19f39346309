//! HTTP for the tests, over std sockets on 127.0.0.1 with bounded timeouts:
//! a blocking HTTP/1.1 client for the REST API of the running binary, and a
//! webhook receiver that records what it is sent and answers from a script
//! (so a test can make the first delivery fail with a 500).

use super::WAIT;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

/// One HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The body as JSON (panics, with the body, if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// Asserts an error envelope with `status` and canonical `code`, whose
    /// `request_id` is also the `x-request-id` header; returns `error`.
    pub fn error(&self, status: u16, code: &str) -> serde_json::Value {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.header("content-type"), Some("application/json"), "{self:?}");
        let v = self.json();
        let e = v["error"].clone();
        assert_eq!(e["status"], code, "{}", self.body);
        let id = e["request_id"].as_str().expect("request_id");
        assert!(id.starts_with("req_"), "{id}");
        assert_eq!(self.header("x-request-id"), Some(id), "{self:?}");
        e
    }
}

/// A client of one API key.
#[derive(Clone)]
pub struct Api {
    pub addr: SocketAddr,
    pub key: Option<String>,
}

impl Api {
    pub fn new(addr: SocketAddr, key: &str) -> Api {
        Api { addr, key: Some(key.to_owned()) }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.send("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &serde_json::Value) -> Reply {
        self.send("POST", path, Some(&body.to_string()))
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.send("DELETE", path, None)
    }

    /// GETs `path`, asserts 200 and returns the JSON.
    pub fn get_ok(&self, path: &str) -> serde_json::Value {
        let r = self.get(path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.json()
    }

    /// POSTs `body`, asserts 200 and returns the JSON.
    pub fn post_ok(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let r = self.post(path, body);
        assert_eq!(r.status, 200, "POST {path} {body}: {}", r.body);
        r.json()
    }

    /// Polls `GET path` (bounded by [`WAIT`]) until `done` holds for its
    /// JSON; returns that JSON.
    pub fn get_until(
        &self,
        path: &str,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.get_ok(path);
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "GET {path}: never {what}; last: {v:#}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One request with `Authorization: Bearer` (when there is a key) and a
    /// JSON body.
    pub fn send(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n",
            self.addr
        );
        if let Some(k) = &self.key {
            head.push_str(&format!("Authorization: Bearer {k}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() || method == "POST" || method == "PUT" {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        request(self.addr, head.as_bytes(), body.as_bytes())
    }
}

/// Sends a raw request and reads the response to the end (the request says
/// `Connection: close`).
pub fn request(addr: SocketAddr, head: &[u8], body: &[u8]) -> Reply {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect to the API");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.set_write_timeout(Some(WAIT)).expect("timeout");
    s.write_all(head).expect("write");
    // A server may answer (413) and close before reading a large body.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked =
        headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(rest) } else { rest.to_vec() };
    Reply { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .expect("chunk size");
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&b[start..start + size]);
        b = &b[start + size + 2..];
    }
    out
}

/// One request a [`Hooks`] receiver got.
#[derive(Debug, Clone)]
pub struct Hook {
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub answered: u16,
}

impl Hook {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
}

/// A webhook receiver on 127.0.0.1 (port 0: the kernel picks it, no race):
/// answers the first `fail_first` requests with 500, the rest with 200.
pub struct Hooks {
    pub addr: SocketAddr,
    got: Receiver<Hook>,
}

impl Hooks {
    pub fn start(fail_first: usize) -> Hooks {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind webhook receiver");
        let addr = listener.local_addr().expect("addr");
        let (tx, got) = channel();
        std::thread::spawn(move || {
            let mut served = 0usize;
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                if serve(conn, &mut served, fail_first, &tx).is_err() {
                    break;
                }
            }
        });
        Hooks { addr, got }
    }

    /// The next request, within [`WAIT`].
    pub fn next(&self) -> Hook {
        self.got.recv_timeout(WAIT).expect("a webhook within the wait")
    }
}

/// Serves the requests of one (keep-alive) connection; `Err` when the test
/// is gone.
fn serve(
    mut conn: TcpStream,
    served: &mut usize,
    fail_first: usize,
    tx: &Sender<Hook>,
) -> Result<(), ()> {
    conn.set_read_timeout(Some(WAIT)).map_err(|_| ())?;
    let mut pending = Vec::new();
    loop {
        let Some((path, headers, body)) = read_request(&mut conn, &mut pending) else {
            return Ok(());
        };
        let answered = if *served < fail_first { 500 } else { 200 };
        *served += 1;
        let reason = if answered == 200 { "OK" } else { "Internal Server Error" };
        let reply = format!("HTTP/1.1 {answered} {reason}\r\nContent-Length: 0\r\n\r\n");
        if conn.write_all(reply.as_bytes()).is_err() {
            return Ok(());
        }
        tx.send(Hook { path, headers, body, answered }).map_err(|_| ())?;
    }
}

type Request = (String, Vec<(String, String)>, Vec<u8>);

fn read_request(conn: &mut TcpStream, pending: &mut Vec<u8>) -> Option<Request> {
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let path = lines.next()?.split(' ').nth(1)?.to_owned();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            let len = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .and_then(|(_, v)| v.parse::<usize>().ok())
                .unwrap_or(0);
            if pending.len() >= end + 4 + len {
                let body = pending[end + 4..end + 4 + len].to_vec();
                pending.drain(..end + 4 + len);
                return Some((path, headers, body));
            }
        }
        let mut buf = [0u8; 8192];
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}
