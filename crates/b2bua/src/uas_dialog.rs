//! A dialog that a request outside any call made with us as its UAS: a
//! subscription (RFC 6665). The switch keeps one per subscription and
//! sends its NOTIFYs through [`crate::CallManager::dialog_request`], the
//! same in-dialog request builder the calls' legs use.

use crate::dialog::Dialog;
use bytes::Bytes;
use sip_message::{HeaderName, Message, Method, Peer};

/// Our side of a dialog a request (a SUBSCRIBE) made with us: Call-ID,
/// tags, CSeq, the remote target and route set, and where it came from.
#[derive(Clone, Debug)]
pub struct UasDialog(pub(crate) Dialog);

impl UasDialog {
    /// Our tag in it (the To tag of our responses).
    pub fn local_tag(&self) -> &str {
        std::str::from_utf8(&self.0.local_tag).unwrap_or_default()
    }

    /// Where its requests go when no route or target says otherwise.
    pub fn peer(&self) -> Peer {
        self.0.peer
    }

    /// A target refresh (a SUBSCRIBE refresh): its Contact becomes the
    /// remote target.
    pub fn refresh(&mut self, m: &Message) {
        self.0.refresh_target(m);
    }
}

/// A request to send in a [`UasDialog`]: method, extra headers and body.
#[derive(Clone, Debug)]
pub struct DialogRequest {
    /// The method (NOTIFY).
    pub method: Method,
    /// Headers added after the dialog's own, by name (Event,
    /// Subscription-State).
    pub headers: Vec<(&'static str, String)>,
    /// Content-Type and body, if any.
    pub body: Option<(String, String)>,
}

impl crate::CallManager {
    /// The dialog our 2xx to `req` (from `peer`) makes, with a fresh tag of
    /// ours (from the manager's seeded generator).
    pub fn uas_dialog(&mut self, req: &Message, peer: Peer) -> UasDialog {
        let tag = self.tokens_mut().token(10);
        UasDialog(Dialog::uas(req, tag, peer))
    }

    /// Our Contact value for messages to `peer`.
    pub fn contact(&self, peer: &Peer) -> Bytes {
        self.settings().contact(peer)
    }

    /// The next request in dialog `d` (its CSeq advanced, our Via on a
    /// fresh branch from `branch`, our Contact), and where it goes; the
    /// caller sends it in a client transaction of its own.
    pub fn dialog_request(
        &self,
        d: &mut UasDialog,
        branch: &str,
        r: DialogRequest,
    ) -> (Message, Peer) {
        let d = &mut d.0;
        d.local_seq = d.local_seq.wrapping_add(1);
        let mf = self.settings().cfg.max_forwards;
        let (mut b, dest) = self.settings().request_in(d, r.method, d.local_seq, branch, mf);
        b = b.header(HeaderName::Contact, self.settings().contact(&dest));
        for (name, value) in r.headers {
            b = b.header_named(name, value);
        }
        if let Some((ctype, body)) = r.body {
            b = b.body(Bytes::from(ctype), Bytes::from(body));
        }
        (b.build(), dest)
    }
}
