//! A ring group call on loopback, for the tests that watch one (records,
//! metrics, traces, HEP, the console): SIPp phones as `sip:` destinations,
//! a server that takes 127.0.0.1 as a trusted carrier (SIPp callers need no
//! digest), and a SIPp caller.

use super::{caller, Phone, Server, CUSTOMER};
use std::path::Path;

/// The API key of the customer that owns domain `test`.
pub const KEY: &str = "key-of-the-test-customer";
/// The API key of another customer (who owns nothing of `test`).
pub const OTHER_KEY: &str = "key-of-another-customer";

/// Config: domain `test` (customer key [`KEY`], another customer with
/// [`OTHER_KEY`]); 127.0.0.1 is a trusted carrier source (so SIPp callers
/// need no digest), plus `groups`.
pub fn trusted(groups: &str) -> String {
    format!(
        "[[customers]]\nid = \"{CUSTOMER}\"\napi_keys = [\"{KEY}\"]\n\
         [[customers]]\nid = \"6a2bd2f0-0c3e-11ee-9a8c-0b6c1e0f4a11\"\napi_keys = [\"{OTHER_KEY}\"]\n[[domains]]\nname = \"test\"\ncustomer_id = \"{CUSTOMER}\"\n\
         [[carriers]]\nname = \"loopback\"\naddress = \"127.0.0.1:9\"\ninbound_sources = [\"127.0.0.1/32\"]\ninbound_domain = \"test\"\n\
         {groups}"
    )
}

/// A `[[groups]]` table: `(type, target, ring_timeout_secs)` per destination.
pub fn group(number: &str, method: &str, dests: &[(&str, String, Option<u64>)]) -> String {
    let d: Vec<String> = dests
        .iter()
        .map(|(kind, target, t)| match t {
            Some(t) => {
                format!("{{ type = \"{kind}\", target = \"{target}\", ring_timeout_secs = {t} }}")
            }
            None => format!("{{ type = \"{kind}\", target = \"{target}\" }}"),
        })
        .collect();
    format!(
        "[[groups]]\nnumber = \"{number}\"\ndomain = \"test\"\nring_method = \"{method}\"\ndestinations = [{}]\n",
        d.join(", ")
    )
}

/// A group `number` (`method`) over one SIPp phone per `(scenario, args)`,
/// in that order, as `sip:p<i>@127.0.0.1:<port>` destinations.
pub fn phones_group(
    dir: &Path,
    number: &str,
    method: &str,
    phones: &[(&str, &[&str])],
) -> (String, Vec<Phone>) {
    let started: Vec<Phone> =
        phones.iter().map(|(scn, args)| Phone::start(dir, scn, args)).collect();
    let dests: Vec<(&str, String, Option<u64>)> =
        started.iter().enumerate().map(|(i, p)| ("sip", p.uri(&format!("p{i}")), None)).collect();
    (group(number, method, &dests), started)
}

/// The call most of these tests watch: group 800 rings a phone that answers
/// after 20 ms and one that rings and gets CANCEL with a Reason header; a
/// SIPp caller (uac.xml) dials 800 on a server started with `extra` config.
/// Returns the server once every phone's call succeeded.
pub fn ring_group_call(extra: &str) -> Server {
    let dir = tempfile::tempdir().expect("dir");
    let (groups, phones) = phones_group(
        dir.path(),
        "800",
        "ring_all",
        &[("uas_answer.xml", &["-d", "20"]), ("uas_ring_cancel_reason.xml", &[])],
    );
    let server = Server::start_with(&format!("{}{extra}", trusted(&groups)));
    caller(server.dir.path(), server.udp, "800", "uac.xml", &[]);
    for p in phones {
        p.assert_ok();
    }
    server
}
