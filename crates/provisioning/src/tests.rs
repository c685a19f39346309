use super::*;
use records::{CallHandling, Origin, RingMethod, Timestamp};

const A: Uuid = Uuid::from_u128(0xa);
const B: Uuid = Uuid::from_u128(0xb);

fn domains() -> Vec<Domain> {
    vec![
        Domain { name: "test".into(), aliases: vec!["alias.test".into()], customer_id: A },
        Domain { name: "other".into(), aliases: vec![], customer_id: B },
    ]
}

fn ext(name: &str, domain: &str) -> Extension {
    Extension { name: name.into(), domain: domain.into(), ..Default::default() }
}

fn dest(kind: AddressType, target: &str) -> RingGroupDestination {
    RingGroupDestination { kind, target: target.into(), ring_timeout_secs: None, delay_secs: None }
}

fn group(number: &str, domain: &str, owner: Uuid, dests: Vec<RingGroupDestination>) -> RingGroup {
    RingGroup {
        id: records::config_id(&format!("{number}@{domain}")),
        customer_id: owner,
        number: number.into(),
        domain: domain.into(),
        ring_method: RingMethod::RingAll,
        answer_method: Default::default(),
        destinations: dests,
        max_ring_secs: None,
        skip_busy: false,
        send_reason: true,
        origin: Origin::Config,
        tm_create: Timestamp::NOT_YET,
        tm_update: Timestamp::NOT_YET,
        tm_delete: Timestamp::NOT_YET,
    }
}

struct World {
    domains: Vec<Domain>,
    extensions: Vec<Extension>,
    groups: Vec<RingGroup>,
}

impl World {
    fn new() -> World {
        let g800 = group("800", "test", A, vec![dest(AddressType::Endpoint, "a@test")]);
        let g900 = group("900", "other", B, vec![dest(AddressType::Endpoint, "z@other")]);
        World {
            domains: domains(),
            extensions: vec![ext("a", "test"), ext("b", "test"), ext("z", "other")],
            groups: vec![g800, g900],
        }
    }

    fn known(&self) -> Listed<'_> {
        Listed { domains: &self.domains, extensions: &self.extensions, ring_groups: &self.groups }
    }
}

fn with(handling: CallHandling) -> Extension {
    Extension { handling, ..ext("a", "test") }
}

fn to(kind: AddressType, target: &str) -> Option<Address> {
    Some(Address::new(kind, target))
}

#[test]
fn listed_finds_domains_extensions_and_groups_as_routing_does() {
    let w = World::new();
    let k = w.known();
    assert_eq!(k.domain_owner("TEST"), Some(A));
    assert_eq!(k.domain_owner("alias.test"), Some(A));
    assert_eq!(k.domain_owner("nowhere"), None);
    assert!(k.has_extension("a", "Test") && !k.has_extension("c", "test"));
    let id = w.groups[0].id;
    assert_eq!(k.ring_group("800", "test").map(|g| g.id), Some(id));
    assert_eq!(k.ring_group("800@test", "other").map(|g| g.id), Some(id));
    assert_eq!(k.ring_group(&id.to_string(), "other").map(|g| g.id), Some(id));
    assert!(k.ring_group("800", "other").is_none());
}

#[test]
fn extension_limits_and_texts() {
    let w = World::new();
    let k = w.known();
    let check = |h: CallHandling| check_extension(&with(h), &k).map_err(|e| e.to_string());
    assert_eq!(check(CallHandling::default()), Ok(()));
    let max = |n| CallHandling { max_calls: Some(n), ..Default::default() };
    assert_eq!(check(max(1)), Ok(()));
    assert_eq!(check(max(MAX_CALLS)), Ok(()));
    assert_eq!(
        check(max(0)),
        Err("max_calls: must be at least 1 (leave it out for no limit)".into())
    );
    assert_eq!(
        check(max(MAX_CALLS + 1)),
        Err("max_calls: must be at most 1000 (leave it out for no limit)".into())
    );
    let secs = CallHandling { forward_noanswer_secs: Some(5), ..Default::default() };
    assert_eq!(check(secs), Err("forward_noanswer_secs: set without forward_noanswer".into()));
    let fwd = |s| CallHandling {
        forward_noanswer: to(AddressType::Endpoint, "b@test"),
        forward_noanswer_secs: Some(s),
        ..Default::default()
    };
    assert_eq!(check(fwd(20)), Ok(()));
    assert_eq!(check(fwd(0)), Err("forward_noanswer_secs: must be 1..=3600".into()));
    assert_eq!(check(fwd(3601)), Err("forward_noanswer_secs: must be 1..=3600".into()));
    let bad_name = Extension { name: "a b".into(), ..ext("a", "test") };
    assert_eq!(check_extension(&bad_name, &k).map_err(|e| e.key), Err("name"));
    let elsewhere = ext("a", "nowhere");
    let e = check_extension(&elsewhere, &k).expect_err("not served");
    assert_eq!(e.to_string(), "domain: \"nowhere\" is not a domain of this switch");
    let long = Extension { display_name: "x".repeat(MAX_TEXT + 1), ..ext("a", "test") };
    assert_eq!(check_extension(&long, &k).map_err(|e| e.key), Err("display_name"));
}

#[test]
fn forwards_go_to_something_that_can_be_rung() {
    let w = World::new();
    let k = w.known();
    let busy = |kind, target: &str| {
        let h = CallHandling { forward_busy: to(kind, target), ..Default::default() };
        check_extension(&with(h), &k).map_err(|e| (e.field, e.reason))
    };
    use AddressType::*;
    assert_eq!(busy(Endpoint, "b@test"), Ok(()));
    assert_eq!(busy(Endpoint, " b@test "), Ok(()));
    assert_eq!(busy(Tel, "+15551234567"), Ok(()));
    assert_eq!(busy(Sip, "bob@192.0.2.1"), Ok(()));
    assert_eq!(busy(Sip, "sip:bob@example.com"), Ok(()));
    assert_eq!(busy(Groupcall, "800"), Ok(()));
    let err = |kind, target: &str| busy(kind, target).expect_err(target).1;
    assert_eq!(err(Endpoint, "a@test"), "forwards to itself");
    assert_eq!(
        err(Endpoint, "nobody@test"),
        "\"nobody@test\" is not an extension (write name@domain)"
    );
    assert!(err(Endpoint, "z@other").contains("not name@domain in one of the owner's domains"));
    assert!(err(Tel, "555").contains("not an E.164 number"));
    assert!(err(Sip, "").contains("empty"));
    assert!(err(Sip, "sip:").contains("not a SIP URI"));
    assert!(err(Groupcall, "999").contains("not a [[groups]] number in test"));
    assert!(err(Groupcall, "900").contains("not a [[groups]] number"), "another owner's group");
    assert_eq!(busy(Endpoint, "nobody@test").expect_err("field").0, "forward_busy");
}

#[test]
fn ring_group_rules() {
    let w = World::new();
    let k = w.known();
    let ok = group("801", "test", A, vec![dest(AddressType::Groupcall, "800")]);
    assert_eq!(check_ring_group(&ok, &k), Ok(()));
    assert_eq!(check_ring_group(&w.groups[0], &k), Ok(()), "a group replacing itself");
    let err = |g: &RingGroup| check_ring_group(g, &k).expect_err("invalid");
    let taken = RingGroup { id: Uuid::from_u128(7), ..w.groups[0].clone() };
    let e = err(&taken);
    assert_eq!((e.fault, e.key), (Fault::Taken, "number"));
    assert_eq!(e.reason, "ring group 800@test exists already");
    assert_eq!(err(&RingGroup { number: "8 0".into(), ..ok.clone() }).key, "number");
    assert_eq!(err(&RingGroup { customer_id: B, ..ok.clone() }).key, "domain");
    assert_eq!(err(&RingGroup { domain: "nowhere".into(), ..ok.clone() }).key, "domain");
    let e = err(&RingGroup { destinations: vec![], ..ok.clone() });
    assert_eq!(e.to_string(), "destinations: at least one destination is needed");
    let many = vec![dest(AddressType::Tel, "+15551234567"); MAX_DESTINATIONS + 1];
    assert_eq!(err(&RingGroup { destinations: many, ..ok.clone() }).key, "destinations");
    let timed = |ring, delay| RingGroupDestination {
        ring_timeout_secs: ring,
        delay_secs: delay,
        ..dest(AddressType::Endpoint, "anyone@test")
    };
    let one =
        |d| RingGroup { destinations: vec![dest(AddressType::Tel, "+4420"), d], ..ok.clone() };
    assert_eq!(check_ring_group(&one(timed(Some(3600), Some(3600))), &k), Ok(()));
    let e = err(&one(timed(Some(0), None)));
    assert_eq!(e.to_string(), "destinations[1].ring_timeout_secs: must be 1..=3600");
    assert_eq!(e.key, "destinations");
    let e = err(&one(timed(None, Some(3601))));
    assert_eq!(e.to_string(), "destinations[1].delay_secs: must be 0..=3600");
    let e = err(&one(dest(AddressType::Endpoint, "x@other")));
    assert_eq!(e.field, "destinations[1].target");
    let e = err(&one(dest(AddressType::Groupcall, "801")));
    assert!(e.reason.contains("not a [[groups]] number"), "{e}");
    for bad in [Some(0), Some(MAX_RING_SECS + 1)] {
        assert_eq!(err(&RingGroup { max_ring_secs: bad, ..ok.clone() }).key, "max_ring_secs");
    }
}

#[test]
fn names_and_numbers() {
    assert!(is_e164("+15551234567"));
    assert!(!is_e164("15551234567"));
    assert!(!is_e164("+1555abc"));
    assert!(is_extension_name("test11") && is_extension_name("a.b_c-d+e~f"));
    assert!(
        !is_extension_name("") && !is_extension_name("a@b") && !is_extension_name(&"x".repeat(65))
    );
    assert!(
        is_group_number("*800#") && !is_group_number("8 00") && !is_group_number(&"1".repeat(33))
    );
}
