//! # switch-bench: the switch core alone, without sockets
//!
//! Prints figures, asserts none (CI runs it so that a regression shows in
//! every log):
//!
//! - **calls per second per core**: the simulation's calls
//!   (`crates/switch/tests/sim`, every link lossless) run once, keeping
//!   every input the switch took; the inputs are then fed into a fresh
//!   switch, which does the same work again alone (the same bytes out in
//!   the same order: the simulation's tests check it), and only that is
//!   timed: the thread's CPU time (a busy machine's preemption does not
//!   count), best of three. The call mix is the simulation's: extensions
//!   with digest, carriers, ring groups of every kind, CANCELs,
//!   re-INVITEs.
//! - **instructions per call**: one such replay counted by callgrind, when
//!   valgrind is installed (`n/a` otherwise): the repeatable figure.
//! - **heap bytes per held call**: fork3 calls left up (`held.rs`).
//!
//! `cargo run --profile bench-ci -p switch-bench [-- CALLS [HELD]]`
//! (release mode without fat LTO; defaults 2,000 and 10,000);
//! `SWITCH_BENCH_CALLGRIND=0` skips callgrind. CI runs `cargo run -p
//! switch-bench`, in the dev profile the tests built (the core's crates at
//! opt-level 3).

mod heap;
mod held;
#[allow(dead_code)]
#[path = "../../switch/tests/sim/mod.rs"]
mod sim;

use sim::run::SwitchTrace;
use std::process::Command;
use std::time::Duration;

#[global_allocator]
static GLOBAL: heap::Counting = heap::Counting;

/// Calls per simulation seed (as in the simulation's test).
const CALLS_PER_SEED: usize = 500;
/// Calls replayed under callgrind (one seed: about a minute).
const CALLGRIND_CALLS: usize = 500;
/// The argument that makes this program the callgrind child.
const CHILD: &str = "--callgrind-child";

/// The simulation's first `calls` calls, every link lossless: what the
/// switch was given.
fn record(calls: usize) -> Vec<SwitchTrace> {
    let seeds = calls.div_ceil(CALLS_PER_SEED);
    (0..seeds)
        .map(|i| {
            let n = CALLS_PER_SEED.min(calls - i * CALLS_PER_SEED);
            let (report, trace) = sim::run::run_traced(1 + i as u64, n, 0.0);
            if let Some(v) = report.violations.first() {
                println!("switch-bench: seed {}: the simulation found a violation: {v}", i + 1);
            }
            trace
        })
        .collect()
}

/// Replays every trace; the bytes sent.
fn replay_all(traces: &[SwitchTrace]) -> usize {
    let mut sent = 0;
    for t in traces {
        let switch = sim::run::replay(t, |b| sent += b.len());
        drop(switch);
    }
    sent
}

/// Instructions of one replay of `calls` calls under callgrind, or why
/// there is no figure.
fn instructions(calls: usize) -> Result<u64, String> {
    if std::env::var("SWITCH_BENCH_CALLGRIND").is_ok_and(|v| v == "0") {
        return Err("skipped (SWITCH_BENCH_CALLGRIND=0)".into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::env::temp_dir().join(format!("switch-bench.{}.callgrind", std::process::id()));
    let run = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .args(["--collect-atstart=no", "--toggle-collect=*sim::run::replay*"])
        .args(["--dump-instr=no", "--collect-jumps=no", "-q"])
        .arg(&exe)
        .args([CHILD, &calls.to_string()])
        .output();
    let run = match run {
        Ok(r) => r,
        Err(e) => return Err(format!("valgrind not run ({e})")),
    };
    let text = std::fs::read_to_string(&out);
    let _ = std::fs::remove_file(&out);
    if !run.status.success() {
        let err = String::from_utf8_lossy(&run.stderr);
        return Err(format!("valgrind failed: {}", err.lines().last().unwrap_or("")));
    }
    let text = text.map_err(|e| format!("no callgrind output: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("totals:").or_else(|| l.strip_prefix("summary:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| "no totals in the callgrind output".into())
}

/// CPU time of this thread so far.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a live timespec to write into.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn arg(n: usize, default: usize) -> usize {
    std::env::args().nth(n).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some(CHILD) {
        // Under callgrind: collection is on inside `replay` only.
        let traces = record(arg(2, CALLGRIND_CALLS));
        replay_all(&traces);
        return;
    }
    let calls = arg(1, 2_000);
    let held = arg(2, 10_000);
    let traces = record(calls);
    let inputs: usize = traces.iter().map(|t| t.inputs.len()).sum();
    let mut best = Duration::MAX;
    let mut sent = 0;
    for _ in 0..3 {
        let t0 = thread_cpu();
        sent = replay_all(&traces);
        best = best.min(thread_cpu().saturating_sub(t0));
    }
    println!(
        "switch-bench calls={calls} inputs={inputs} sent_bytes={sent} replay_cpu_s={:.3} calls_per_sec_per_core={:.0}",
        best.as_secs_f64(),
        calls as f64 / best.as_secs_f64()
    );
    match instructions(CALLGRIND_CALLS) {
        Ok(ir) => println!(
            "switch-bench instr_per_call={} (callgrind, {CALLGRIND_CALLS} calls replayed)",
            ir / CALLGRIND_CALLS as u64
        ),
        Err(why) => println!("switch-bench instr_per_call=n/a ({why})"),
    }
    let w = held::weigh(held);
    let empty = held::weigh(0);
    let per_call = (w.heap - empty.heap) / held.max(1) as isize;
    println!(
        "switch-bench held_calls={held} heap_bytes_per_held_call={per_call} (switch holds calls={} dialog_calls={} transactions={} timers={}; unexpected messages {})",
        w.stats.calls, w.stats.dialog_calls, w.stats.transactions, w.stats.timers, w.unexpected
    );
}
