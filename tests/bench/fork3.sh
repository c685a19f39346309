#!/usr/bin/env bash
# Forking benchmark: SIPp UAC -> forkswitch (release) -> ring group of 3 SIPp
# UAS: one answers after 20 ms, two ring and get CANCELed (with Reason).
#
#   bash tests/bench/fork3.sh [RATES] [SECONDS_PER_STEP] [HELD_CALLS]
#   e.g. bash tests/bench/fork3.sh "500 1000 1500 2000 2500 3000" 5 10000
#
# For each rate: `rate=R ok=X failed=Y retrans=Z server_cpu_pct=C
# server_cpu_ms_per_call=P rss_kb=M udp_rcvbuf_errors=E`, where retrans
# counts retransmissions seen by every SIPp instance. Then RSS growth per
# answered call with HELD_CALLS calls up at once, and last
# `fork3_clean_cps=N`: the highest rate with 0 failed, 0 retransmissions
# and no UDP drops. The 4 SIPp instances share the machine's 2 cores with
# the server. Traffic stays on 127.0.0.1; only processes started here are
# stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."
RATES=${1:-"500 1000 1500 2000 2500 3000"}
SECS=${2:-5}
HELD=${3:-10000}
. tests/bench/fork3_setup.sh
start_server

HZ=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14+$15}' /proc/$FS_PID/stat; }
rss_kb() { awk '/VmRSS/{print $2}' /proc/$FS_PID/status; }
# last value of a column of a SIPp -trace_stat file
stat_col() { python3 - "$1" "$2" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter=';'))
h = rows[0]; print(rows[-1][h.index(sys.argv[2])] if len(rows) > 1 else 0)
PY
}

run_step() {
    local rate=$1 calls=$2 hold=$3 tag=$4
    local uas=()
    sipp -sf "$SCN/uas_answer.xml" -d 20 -p "$P1" -m "$calls" "${SIPP_COMMON[@]}" -stf "a_$tag.csv" -timeout $((SECS*4+hold/1000+30))s >/dev/null 2>&1 & uas+=($!)
    sipp -sf "$SCN/uas_ring_cancel_reason.xml" -p "$P2" -m "$calls" "${SIPP_COMMON[@]}" -stf "b_$tag.csv" -timeout $((SECS*4+hold/1000+30))s >/dev/null 2>&1 & uas+=($!)
    sipp -sf "$SCN/uas_ring_cancel_reason.xml" -p "$P3" -m "$calls" "${SIPP_COMMON[@]}" -stf "c_$tag.csv" -timeout $((SECS*4+hold/1000+30))s >/dev/null 2>&1 & uas+=($!)
    PIDS+=("${uas[@]}")
    sleep 0.5
    local c0 e0 t0
    c0=$(cpu_ticks); e0=$(rcvbuf_errors); t0=$(date +%s.%N)
    sipp -sf "$SCN/uac_hold.xml" -s 800 "127.0.0.1:$PS" -d "$hold" -r "$rate" -m "$calls" -l $((calls+10)) \
        -p 0 "${SIPP_COMMON[@]}" -stf "uac_$tag.csv" -timeout $((SECS*4+hold/1000+30))s >/dev/null 2>&1 &
    UAC_PID=$!; PIDS+=("$UAC_PID")
    if [ "${5:-}" = "held" ]; then return; fi
    wait "$UAC_PID" || true
    # The phones end by themselves once they saw every call; calls that
    # failed never reach them, so stop waiting after a few seconds.
    for _ in $(seq 1 50); do
        alive=0; for p in "${uas[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break; sleep 0.1
    done
    for p in "${uas[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    sleep 1.2  # let -fd 1 flush the last statistics line
    local c1 e1 t1 ok failed retr cpu_ms secs
    c1=$(cpu_ticks); e1=$(rcvbuf_errors); t1=$(date +%s.%N)
    ok=$(stat_col "uac_$tag.csv" "SuccessfulCall(C)")
    failed=$(( $(stat_col "uac_$tag.csv" "FailedCall(C)") + $(stat_col "a_$tag.csv" "FailedCall(C)") + $(stat_col "b_$tag.csv" "FailedCall(C)") + $(stat_col "c_$tag.csv" "FailedCall(C)") ))
    retr=$(( $(stat_col "uac_$tag.csv" "Retransmissions(C)") + $(stat_col "a_$tag.csv" "Retransmissions(C)") + $(stat_col "b_$tag.csv" "Retransmissions(C)") + $(stat_col "c_$tag.csv" "Retransmissions(C)") ))
    cpu_ms=$(( (c1-c0)*1000/HZ ))
    secs=$(python3 -c "print(f'{$t1-$t0:.2f}')")
    echo "rate=$rate ok=$ok failed=$failed retrans=$retr server_cpu_pct=$(python3 -c "print(round(100*$cpu_ms/1000/($t1-$t0)))") server_cpu_ms_per_call=$(python3 -c "print(round($cpu_ms/max($ok,1),3))") rss_kb=$(rss_kb) udp_rcvbuf_errors=$((e1-e0)) secs=$secs"
    if [ "$failed" = 0 ] && [ "$retr" = 0 ] && [ $((e1-e0)) = 0 ] && [ "$ok" = "$calls" ]; then CLEAN=$rate; fi
}

CLEAN=0
for r in $RATES; do run_step "$r" $((r*SECS)) 0 "r$r"; done

# Held calls, on a fresh server: RSS growth per answered call with HELD
# calls up at once, right after the ramp (the calls' transactions are still
# in their RFC wait states) and once those have ended (Timer L/M, 32 s).
kill "$FS_PID"; wait "$FS_PID" 2>/dev/null || true
start_server
sleep 1
RSS0=$(rss_kb)
RAMP=$(( HELD/500 ))
HOLD_MS=$(( (RAMP + 50) * 1000 ))
run_step 500 "$HELD" "$HOLD_MS" held held
sleep $(( RAMP + 2 ))
RSS1=$(rss_kb)
sleep 36
RSS2=$(rss_kb)
echo "held_calls=$HELD rss_kb_fresh=$RSS0 rss_kb_after_ramp=$RSS1 rss_kb_transactions_drained=$RSS2 rss_bytes_per_held_call_after_ramp=$(( (RSS1-RSS0)*1024/HELD )) rss_bytes_per_held_call=$(( (RSS2-RSS0)*1024/HELD ))"
echo "fork3_clean_cps=$CLEAN"
