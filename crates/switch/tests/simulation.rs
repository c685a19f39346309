//! Deterministic simulation of whole calls through the switch core, in
//! virtual time over a lossy simulated network (issue 9). See `sim/` for
//! the parts, `sim/oracle.rs` for what is checked.
//!
//! - `SIM_CALLS=N`: total calls (default [`DEFAULT_CALLS`]), in seeds of
//!   [`CALLS_PER_SEED`] calls each;
//! - `SIM_SEED=S`: runs only seed `S` (replays it exactly);
//! - `SIM_BASE_SEED=B`: the first seed of a multi-seed run (default 1);
//! - `SIM_MAX_LOSS=P`: links lose up to P % (default 10) for stress runs.
//!
//! A failing seed prints one line: the seed, its first violation, and the
//! command that replays it (`SIM_SHOW=N` prints up to N violations). The
//! last line printed is `simulation seeds=S calls=N violations=V`; the test
//! fails when V > 0. `SIM_VERBOSE=1` adds a line per seed (virtual time,
//! messages, fingerprint) and what the run exercised; `SIM_TRACE=<part of a
//! Call-ID>` prints every message of matching calls at the switch.

mod sim;

use std::io::Write;

/// Calls per CI run.
const DEFAULT_CALLS: usize = 100_000;
/// Calls per seed (a seed's calls overlap in time).
const CALLS_PER_SEED: usize = 500;

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Writes straight to stdout: the harness does not capture it.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn replay(seed: u64, calls: usize) -> String {
    let mut env = format!("SIM_SEED={seed}");
    if calls != CALLS_PER_SEED {
        env.push_str(&format!(" SIM_CALLS={calls}"));
    }
    if let Ok(loss) = std::env::var("SIM_MAX_LOSS") {
        env.push_str(&format!(" SIM_MAX_LOSS={loss}"));
    }
    format!("{env} cargo test -p switch --test simulation")
}

/// A seed replays exactly: the same messages, in the same order, at the
/// same virtual times (and so the same verdict).
#[test]
fn a_seed_replays_exactly() {
    let a = sim::run::run_seed(4242, 60);
    let b = sim::run::run_seed(4242, 60);
    assert_eq!(a.fingerprint, b.fingerprint, "seed 4242 did not replay exactly");
    assert_eq!(a.messages, b.messages);
    assert_eq!(a.violations, b.violations);
    let c = sim::run::run_seed(4243, 60);
    assert_ne!(a.fingerprint, c.fingerprint, "another seed, another run");
}

/// The switch alone, given the inputs it took in a run, does the run
/// again: the same bytes sent in the same order (what the core benchmark,
/// crates/switch-bench, relies on to time the switch without the network).
#[test]
fn the_switch_alone_replays_a_run_from_its_inputs() {
    let (report, trace) = sim::run::run_traced(4242, 60, sim::run::loss_ceiling());
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert!(trace.inputs.len() > 60 * 5, "a trace of every input: {}", trace.inputs.len());
    let mut sent = 0;
    sim::run::replay(&trace, |b| sent = sim::run::digest(sent, b));
    assert_eq!(sent, trace.sent, "the replay sent other bytes");
}

/// Seed 3 (40 calls): an API hangup before the answer (487 to the caller)
/// was recorded on the inbound call as `hangup_by: remote`; the operator's
/// hangup is the switch's (`local`).
#[test]
fn regression_seed_3_api_hangup_before_answer_is_local() {
    let r = sim::run::run_seed(3, 40);
    assert!(r.violations.is_empty(), "seed 3: {:?}", r.violations);
}

#[test]
fn simulation() {
    let total = env_num("SIM_CALLS").map_or(DEFAULT_CALLS, |n| n as usize);
    let runs: Vec<(u64, usize)> = match env_num("SIM_SEED") {
        Some(seed) => vec![(seed, total.min(CALLS_PER_SEED))],
        None => {
            let base = env_num("SIM_BASE_SEED").unwrap_or(1);
            let seeds = total.div_ceil(CALLS_PER_SEED).max(1);
            (0..seeds)
                .map(|i| {
                    let calls = CALLS_PER_SEED.min(total - i * CALLS_PER_SEED);
                    (base + i as u64, calls)
                })
                .collect()
        }
    };
    let started = std::time::Instant::now();
    let verbose = std::env::var_os("SIM_VERBOSE").is_some();
    let (mut calls, mut violations) = (0usize, 0usize);
    let mut coverage = std::collections::BTreeMap::new();
    for &(seed, n) in &runs {
        let r = sim::run::run_seed(seed, n);
        calls += r.calls;
        violations += r.violations.len();
        for (k, v) in &r.coverage {
            *coverage.entry(k.clone()).or_insert(0u64) += v;
        }
        for (k, v) in &r.outcomes {
            *coverage.entry(format!("callers {k}")).or_insert(0u64) += *v as u64;
        }
        if verbose {
            say(&format!(
                "seed {seed}: {} calls, {:.0} s virtual, {} messages, fingerprint {:016x}",
                r.calls, r.virtual_secs, r.messages, r.fingerprint
            ));
        }
        if let Some(first) = r.violations.first() {
            let more = match r.violations.len() - 1 {
                0 => String::new(),
                n => format!(" (and {n} more)"),
            };
            say(&format!("seed {seed}: {first}{more}; replay: {}", replay(seed, n)));
            // SIM_SHOW=N: the next N - 1 violations too, one line each.
            let shown = env_num("SIM_SHOW").map_or(1, |n| n as usize);
            for v in r.violations.iter().skip(1).take(shown.saturating_sub(1)) {
                say(&format!("seed {seed}: {v}"));
            }
        }
    }
    if verbose {
        for (k, v) in &coverage {
            say(&format!("  {k}: {v}"));
        }
        say(&format!("wall time {:.1} s", started.elapsed().as_secs_f64()));
    }
    say(&format!("simulation seeds={} calls={calls} violations={violations}", runs.len()));
    assert_eq!(violations, 0, "the simulation found violations (see above)");
}
