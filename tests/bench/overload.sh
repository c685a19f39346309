#!/usr/bin/env bash
# Overload benchmark (issue 11): SIPp UAC -> forkswitch (release) -> ring
# group of 3 SIPp UAS (one answers after 20 ms, two ring and are CANCELed),
# the fork3 load of tests/bench/fork3.sh, with a caller that takes a 503 as
# "rejected" (sipp-scenarios/uac_overload.xml). First the rates in RATES
# find the clean capacity C of this run (no failed call, no rejection, no
# retransmission, no UDP drop); then 2 x C is offered.
#
#   bash tests/bench/overload.sh ["RATES"] [SECONDS_PER_STEP]   # e.g. "1600 2000 2400" 10
#   env MAX_QUEUE_DELAY_MS, RESUME_QUEUE_DELAY_MS, SUSTAIN_MS, MAX_TRANSACTIONS: [overload] settings
#   (the shipped defaults otherwise); OVERLOAD_RATE: offer that instead of 2 x C; KEEP=1 keeps the
#   work directory; FS_BIN: the server binary (default: target/release/forkswitch, built first)
#
# One line per step:
#   overload offered=R admitted=A rejected=J failed=F p99_ms=P
# R and A in calls/s over the step (A: calls answered), J and F counts (F:
# calls that got neither an answer nor a 503, or that failed later, at the
# caller or a phone), P the 99th percentile setup time (INVITE -> 200) of
# the admitted calls. The last line: `clean_cps=C overload_cps=2C ...`.
# The SIPp instances share the machine's 2 cores with the server, so the
# caller itself limits what can be offered: the offered rate printed is
# what SIPp really sent. Traffic stays on 127.0.0.1; only processes
# started here are stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."
RATES=${1:-"1600 2000 2400"}
SECS=${2:-10}
# The shipped [overload] defaults, but for the settings given.
FS_EXTRA="[overload]"
for kv in "max_queue_delay_ms=${MAX_QUEUE_DELAY_MS:-}" "resume_queue_delay_ms=${RESUME_QUEUE_DELAY_MS:-}" \
          "sustain_ms=${SUSTAIN_MS:-}" "max_transactions=${MAX_TRANSACTIONS:-}"; do
    if [ -n "${kv#*=}" ]; then FS_EXTRA+=$'\n'"${kv%%=*} = ${kv#*=}"; fi
done
. tests/bench/fork3_setup.sh
start_server

# Prints `overload ...` for one step and sets CLEAN_STEP=1 when it was clean.
run_step() {
    local rate=$1 calls=$(( $1 * SECS )) tag=r$1
    local uas=() t=$((SECS*4+40))s
    sipp -sf "$SCN/uas_answer.xml" -d 20 -p "$P1" "${SIPP_COMMON[@]}" -stf "a_$tag.csv" -timeout "$t" >/dev/null 2>&1 & uas+=($!)
    sipp -sf "$SCN/uas_ring_cancel_reason.xml" -p "$P2" "${SIPP_COMMON[@]}" -stf "b_$tag.csv" -timeout "$t" >/dev/null 2>&1 & uas+=($!)
    sipp -sf "$SCN/uas_ring_cancel_reason.xml" -p "$P3" "${SIPP_COMMON[@]}" -stf "c_$tag.csv" -timeout "$t" >/dev/null 2>&1 & uas+=($!)
    PIDS+=("${uas[@]}")
    sleep 0.5
    local e0 e1
    e0=$(rcvbuf_errors)
    mkdir -p "uac_$tag"
    ( cd "uac_$tag" && sipp -sf "$SCN/uac_overload.xml" -s 800 "127.0.0.1:$PS" -d 0 -r "$rate" -m "$calls" \
        -l $((calls+10)) -p 0 "${SIPP_COMMON[@]}" -stf uac.csv -recv_timeout 8000 -timeout "$t" \
        -trace_rtt -rtt_freq 1 -trace_err -error_file uac.err >/dev/null 2>&1 ) &
    local uac=$!; PIDS+=("$uac")
    wait "$uac" || true
    # The phones see only admitted calls: give them a moment to finish.
    sleep 2
    # SIPp quits on USR1 (writing its last statistics) once its calls are
    # done; one still waiting for a message that will never come gets TERM.
    for p in "${uas[@]}"; do kill -USR1 "$p" 2>/dev/null || true; done
    for _ in $(seq 1 50); do
        alive=0; for p in "${uas[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break; sleep 0.1
    done
    for p in "${uas[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    e1=$(rcvbuf_errors)
    local line
    line=$(python3 - "$tag" "$rate" "$SECS" "$((e1-e0))" <<'PY'
import csv, glob, sys
tag, rate, secs, drops = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def last(fn):
    rows = list(csv.reader(open(fn), delimiter=';'))
    return dict(zip(rows[0], rows[-1])) if len(rows) > 1 else {}
def n(d, k):
    try: return int(d.get(k, 0))
    except ValueError: return 0
u = last(f"uac_{tag}/uac.csv")
phones = [last(f"{p}_{tag}.csv") for p in "abc"]
failed = n(u, "FailedCall(C)") + sum(n(p, "FailedCall(C)") for p in phones)
retrans = n(u, "Retransmissions(C)") + sum(n(p, "Retransmissions(C)") for p in phones)
offered = n(u, "TotalCallCreated")
setup, rejected = [], 0
for fn in glob.glob(f"uac_{tag}/*_rtt.csv"):
    for r in list(csv.reader(open(fn), delimiter=';'))[1:]:
        if len(r) < 3:
            continue
        if r[2].strip() == "setup":
            setup.append(float(r[1]))
        elif r[2].strip() == "rejected":
            rejected += 1
setup.sort()
p99 = setup[min(len(setup) - 1, int(len(setup) * 0.99))] if setup else 0.0
admitted = len(setup)
clean = failed == 0 and rejected == 0 and retrans == 0 and drops == 0 and admitted == rate * secs
print(f"overload offered={offered / secs:.0f} admitted={admitted / secs:.0f} rejected={rejected} "
      f"failed={failed} p99_ms={p99:.0f} calls={offered} admitted_calls={admitted} "
      f"retrans={retrans} udp_drops={drops} clean={int(clean)}")
PY
)
    echo "$line"
    CLEAN_STEP=$(echo "$line" | sed -E 's/.*clean=([01]).*/\1/')
    LAST_LINE=$line
}

CLEAN=0
for r in $RATES; do
    run_step "$r"
    [ "$CLEAN_STEP" = 1 ] && CLEAN=$r
done
[ "$CLEAN" -gt 0 ] || { echo "no clean step in $RATES"; exit 1; }
OVER=${OVERLOAD_RATE:-$((CLEAN * 2))}
run_step "$OVER"
ADMITTED=$(echo "$LAST_LINE" | sed -E 's/.*admitted=([0-9]+).*/\1/')
SHED=$(grep -c '"event":"overload"' fs.log || true)
echo "clean_cps=$CLEAN overload_cps=$OVER admitted_cps=$ADMITTED admitted_pct_of_clean=$((100 * ADMITTED / CLEAN)) overload_episodes=$SHED"
