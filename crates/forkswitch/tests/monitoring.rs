//! The operator's monitoring material, checked against the real binary:
//! `promtool check rules` passes on `config/prometheus/forkswitch-rules.yml`
//! (Debian's prometheus), and every `forkswitch_*` metric that the rules and
//! the Grafana dashboard (`config/grafana/forkswitch.json`) name, with every
//! exact label value they select on, is in a live `/metrics` after a ring
//! group call.

mod common;

use common::http::Api;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const RULES: &str = "config/prometheus/forkswitch-rules.yml";
const DASHBOARD: &str = "config/grafana/forkswitch.json";

/// A metric name and the exact label matchers (`label="value"`) of one
/// selector in a PromQL expression.
type Selector = (String, Vec<(String, String)>);

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Every `forkswitch_*` selector in `text` (PromQL, or a file holding it).
fn selectors(text: &str) -> Vec<Selector> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = text[i..].find("forkswitch_").map(|p| p + i) {
        if at > 0 && is_name_byte(b[at - 1]) {
            i = at + 1;
            continue;
        }
        let mut end = at;
        while end < b.len() && is_name_byte(b[end]) {
            end += 1;
        }
        if end == at + "forkswitch_".len() {
            i = end; // the prefix alone (`forkswitch_*` in a comment)
            continue;
        }
        let mut labels = Vec::new();
        if b.get(end) == Some(&b'{') {
            let close = text[end..].find('}').map_or(b.len(), |p| p + end);
            labels = exact_matchers(&text[end + 1..close]);
        }
        out.push((text[at..end].to_owned(), labels));
        i = end;
    }
    out
}

/// `a="x", b=~"y"` -> `[(a, x)]`: exact matchers only (regexes and
/// Grafana variables are not checked).
fn exact_matchers(inside: &str) -> Vec<(String, String)> {
    inside
        .split(',')
        .filter_map(|m| {
            let (k, v) = m.split_once('=')?;
            let v = v.strip_prefix('"')?.strip_suffix('"')?;
            (!v.contains('$')).then(|| (k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

/// The PromQL of the dashboard: every panel target's `expr`.
fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(serde_json::Value::String(e)) = m.get("expr") {
                out.push(e.clone());
            }
            m.values().for_each(|x| dashboard_exprs(x, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| dashboard_exprs(x, out)),
        _ => {}
    }
}

/// Samples of a `/metrics` text: name -> the label sets it has.
fn samples(text: &str) -> BTreeMap<String, Vec<BTreeSet<(String, String)>>> {
    let mut out: BTreeMap<String, Vec<BTreeSet<(String, String)>>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let mut labels = BTreeSet::new();
        if line[name_end..].starts_with('{') {
            let close = line.find('}').unwrap_or(line.len());
            for m in line[name_end + 1..close].split(',') {
                if let Some((k, v)) = m.split_once('=') {
                    labels.insert((k.to_owned(), v.trim_matches('"').to_owned()));
                }
            }
        }
        out.entry(line[..name_end].to_owned()).or_default().push(labels);
    }
    out
}

#[test]
fn promtool_accepts_the_alerting_rules() {
    let rules = common::repo_root().join(RULES);
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool (Debian prometheus; tests/peers.sh installs it)");
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool check rules {RULES}:\n{said}");
    assert!(said.contains("SUCCESS"), "{said}");
}

#[test]
fn every_metric_of_the_dashboard_and_rules_is_served() {
    let root = common::repo_root();
    let rules = std::fs::read_to_string(root.join(RULES)).expect("rules");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join(DASHBOARD)).expect("dashboard"))
            .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 20, "the dashboard has {} queries", exprs.len());
    let mut wanted: Vec<(&str, Selector)> =
        selectors(&rules).into_iter().map(|s| ("rules", s)).collect();
    wanted.extend(exprs.iter().flat_map(|e| selectors(e)).map(|s| ("dashboard", s)));
    // The template variable's query names one too.
    wanted.extend(
        selectors(&dashboard["templating"].to_string()).into_iter().map(|s| ("dashboard", s)),
    );

    let server = common::fork::ring_group_call("");
    let api = Api::new(server.http, "demo-api-key");
    let scrape = api.get("/metrics");
    assert_eq!(scrape.status, 200);
    let served = samples(&scrape.body);
    let calls = served.get("forkswitch_calls_started_total").expect("calls_started");
    assert!(scrape.body.contains("forkswitch_calls_started_total 1"), "{calls:?}");

    let mut missing = Vec::new();
    for (from, (name, labels)) in &wanted {
        let ok = served
            .get(name)
            .is_some_and(|sets| sets.iter().any(|set| labels.iter().all(|l| set.contains(l))));
        if !ok {
            missing.push(format!("{from}: {name} {labels:?}"));
        }
    }
    missing.sort();
    missing.dedup();
    assert!(missing.is_empty(), "not in a live /metrics:\n{}", missing.join("\n"));
}

#[test]
fn selectors_are_read_from_promql() {
    let s = selectors(
        r#"sum(rate(forkswitch_calls_total{outcome="answered",instance=~"$instance"}[5m])) / x_forkswitch_no + forkswitch_up"#,
    );
    assert_eq!(
        s,
        vec![
            (
                "forkswitch_calls_total".to_owned(),
                vec![("outcome".to_owned(), "answered".to_owned())]
            ),
            ("forkswitch_up".to_owned(), vec![]),
        ]
    );
}
