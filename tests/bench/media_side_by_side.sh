#!/usr/bin/env bash
# Media anchoring side by side: Kamailio with its rtpengine module
# (media/kamailio.cfg) and forkswitch with [media] mode = "rtpengine"
# (media/forkswitch.toml), both anchoring through ONE rtpengine (userspace,
# ng 127.0.0.1:2223, media ports 20000-29999), under the same SIPp load with
# SDP offers (media/scenarios: every INVITE a callee gets and the 200 the
# caller gets must carry rtpengine's SDP, else the call fails).
#
#   flock /tmp/bench.lock bash tests/bench/media_side_by_side.sh [MODE] ["RATE1 RATE2 ..."] [SECONDS_PER_STEP]
#   (env: NICE, HOLD_MS, RING_MS, FS_BIN, SUTS, SHARED_BENCH)
#
# It runs ../shared/bench/run_anchor.sh (the side-by-side runner; MODE fork3
# or one) with this bench's scenarios and configs, and prints per rate and
# server one line as side_by_side.sh does, plus rtpengine's CPU per call over
# the step and the calls left in rtpengine after it (`list`; must be 0).
#
# HOOK for forkswitch: SUTS defaults to "kamailio" because forkswitch does
# not anchor media yet (its config refuses [media]). Once it does, run with
# SUTS="kamailio forkswitch" (and make that the default).
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shared/ sits beside the clone (../shared), or beside a worktree's parent.
SHARED="${SHARED_BENCH:-$ROOT/../shared/bench}"
[ -d "$SHARED" ] || SHARED="$ROOT/../../shared/bench"
MODE=${1:-fork3}; RATES=${2:-"1000 1400 2000"}; SECS=${3:-10}
SUTS=${SUTS:-kamailio}
NICE=${NICE:-0}
NG=127.0.0.1:2223
[ -x "$SHARED/run_anchor.sh" ] || { echo "need $SHARED/run_anchor.sh (SHARED_BENCH=...)" >&2; exit 2; }
command -v rtpengine >/dev/null || { echo "need rtpengine (bash tests/peers.sh)" >&2; exit 2; }
export FS_BIN="$(realpath -m "${FS_BIN:-$ROOT/target/release/forkswitch}")"

WORK=$(mktemp -d)
RTPE=""
cleanup() {
    if [ -n "$RTPE" ]; then kill "$RTPE" 2>/dev/null; wait "$RTPE" 2>/dev/null; fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# run_anchor.sh finds scenarios/ and forkswitch/forkswitch.toml beside itself.
ln -s "$SHARED/run_anchor.sh" "$WORK/run_anchor.sh"
ln -s "$HERE/media/scenarios" "$WORK/scenarios"
mkdir "$WORK/forkswitch" && ln -s "$HERE/media/forkswitch.toml" "$WORK/forkswitch/forkswitch.toml"

if ss -Hlun "sport = :2223" | grep -q .; then echo "port 2223 in use; refusing to run" >&2; exit 3; fi
nice -n "$NICE" rtpengine --config-file=none --table=-1 --interface=127.0.0.1 --listen-ng=$NG \
    --port-min=20000 --port-max=29999 --delete-delay=0 --log-level=4 -f -E > "$WORK/rtpengine.log" 2>&1 &
RTPE=$!
python3 "$HERE/media/ng.py" $NG ping || { cat "$WORK/rtpengine.log"; exit 4; }
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14+$15}' "/proc/$RTPE/stat"; }

for r in $RATES; do
  for sut in $SUTS; do
    t0=$(ticks)
    line=$(SUT=$sut KAMAILIO_CFG="$HERE/media/kamailio.cfg" NICE=$NICE "$WORK/run_anchor.sh" "$MODE" "$r" $((r*SECS)) 2>&1 | tail -1)
    t1=$(ticks)
    left=$(python3 "$HERE/media/ng.py" $NG list 2>/dev/null || echo '?')
    python3 - "$line" "$sut" "$(( (t1-t0)*1000/HZ ))" "$left" <<'PY'
import re, sys
l, sut, rtpe_ms, left = sys.argv[1:5]
g = lambda k: (re.search(r'\b' + k + r'=([-\w.]+)', l) or [None, '?'])[1]
ok = g('ok')
per_call = f"{int(rtpe_ms) / int(ok):.3f}" if ok.isdigit() and int(ok) > 0 else '?'
print(f"{sut + '+rtpengine ' + l.split(':')[0].split()[-1]:<28} rate={g('rate'):>5} ok={ok:>6} failed={g('failed'):>5} rejected={g('rejected'):>5} "
      f"retrans={g('retrans'):>5} uas_retrans={g('uas_retrans'):>5} drops={g('udp_rcvbuf_drops'):>5} cps={g('achieved_cps'):>5} "
      f"p50={g('p50'):>4} p99={g('p99'):>5} server_cpu={g('server'):>4}% ms_per_call={g('server_ms_per_call')} "
      f"rtpengine_ms_per_call={per_call} rtpengine_calls_left={left}")
if not ok.isdigit():
    print("  run_anchor said: " + l, file=sys.stderr)
PY
    sleep 2
  done
done
