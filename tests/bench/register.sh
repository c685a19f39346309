#!/usr/bin/env bash
# REGISTER benchmark: SIPp -> forkswitch (release build) with digest auth.
#
#   bash tests/bench/register.sh [N] [RATE]
#
# Creates N extensions (default 100000), registers all of them once (fill),
# then registers all of them again with N bindings stored (measured pass),
# each REGISTER being the full digest exchange (REGISTER, 401, REGISTER with
# Authorization, 200). Prints the server's CPU per REGISTER, RSS growth per
# binding, UDP receive errors, and last a line `register_per_sec=N`.
# SIPp runs on the same 2 cores as the server: its CPU is part of the limit.
# Only 127.0.0.1 is used. Stops only the processes it started.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-100000}
RATE=${2:-8000}
cargo build --release -p forkswitch >/dev/null 2>&1
BIN=$PWD/target/release/forkswitch
SCN=$PWD/sipp-scenarios/register.xml
WORK=$(mktemp -d)
trap 'kill "${FS_PID:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

CUST=5e4a0680-804e-11ec-8477-2fea5968d85b
python3 - "$N" "$WORK" "$CUST" <<'PY'
import sys
n, work, cust = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(f"{work}/fs.toml", "w") as f:
    f.write('[sip]\nudp = ["127.0.0.1:0"]\nrecv_buffer_bytes = 16777216\nsend_buffer_bytes = 16777216\n')
    f.write('[log]\nlevel = "info"\n[database]\npath = "fs.db"\n')
    f.write('[registrar]\nalgorithms = ["MD5"]\nban_max_failures = 0\n')
    f.write(f'[[customers]]\nid = "{cust}"\n[[domains]]\nname = "test"\ncustomer_id = "{cust}"\n')
    for i in range(n):
        f.write(f'[[extensions]]\nname = "b{i:06d}"\ndomain = "test"\npassword = "pw{i:06d}"\n')
with open(f"{work}/users.csv", "w") as f:
    f.write("SEQUENTIAL\n")
    for i in range(n):
        f.write(f"b{i:06d};test;[authentication username=b{i:06d} password=pw{i:06d}]\n")
PY

cd "$WORK"
# The server logs its port as JSON; start it and read the port.
"$BIN" run --config fs.toml --log-format json > fs.log 2>&1 &
FS_PID=$!
PORT=""
for _ in $(seq 1 600); do
    PORT=$(grep -o '"addr":"127.0.0.1:[0-9]*"' fs.log 2>/dev/null | head -1 | grep -o '[0-9]*"$' | tr -d '"' || true)
    [ -n "$PORT" ] && grep -q "forkswitch ready" fs.log && break
    sleep 0.1
done
[ -n "$PORT" ] || { echo "server did not start"; cat fs.log; exit 1; }

rss_kb() { awk '/VmRSS/{print $2}' /proc/$FS_PID/status; }
cpu_ticks() { awk '{print $14+$15}' /proc/$FS_PID/stat; }
rcvbuf_errors() { awk '/^Udp:/{n++} /^Udp:/&&n==2{print $6}' /proc/net/snmp; }
HZ=$(getconf CLK_TCK)

run_pass() {
    local name=$1
    local t0 c0 e0 t1 c1 e1 ok failed
    t0=$(date +%s.%N); c0=$(cpu_ticks); e0=$(rcvbuf_errors)
    sipp -sf "$SCN" -inf users.csv "127.0.0.1:$PORT" -m "$N" -r "$RATE" -rp 1000 -l 20000 \
        -i 127.0.0.1 -p 0 -buff_size 4194304 -nostdin -timeout 600s -trace_stat -stf "$name.csv" \
        -fd 1000 > "$name.out" 2>&1 || true
    t1=$(date +%s.%N); c1=$(cpu_ticks); e1=$(rcvbuf_errors)
    ok=$(tail -1 "$name.csv" | awk -F';' '{print $0}' | python3 -c "
import sys,csv
rows=list(csv.reader(open('$name.csv'),delimiter=';'))
h=rows[0]; last=rows[-1]
print(last[h.index('SuccessfulCall(C)')], last[h.index('FailedCall(C)')], last[h.index('Retransmissions(C)')])")
    read -r okc failc retr <<<"$ok"
    local secs cpu_ms
    secs=$(python3 -c "print(f'{$t1-$t0:.2f}')")
    cpu_ms=$(python3 -c "print(f'{($c1-$c0)*1000/$HZ:.0f}')")
    echo "$name: registers=$okc failed=$failc retrans=$retr secs=$secs server_cpu_ms=$cpu_ms udp_rcvbuf_errors=$((e1-e0)) per_sec=$(python3 -c "print(round($okc/max($t1-$t0,1e-9)))") server_cpu_us_per_register=$(python3 -c "print(round(($c1-$c0)*1e6/$HZ/max($okc,1),1))")"
    LAST_RATE=$(python3 -c "print(round($okc/max($t1-$t0,1e-9)))")
}

RSS0=$(rss_kb)
run_pass fill
# Completed non-INVITE transactions linger for Timer J (64*T1 = 32 s over
# UDP); measure memory once they are gone, so that it is the bindings'.
sleep 34
RSS1=$(rss_kb)
run_pass stored
echo "rss_kb_before=$RSS0 rss_kb_after_fill=$RSS1 rss_bytes_per_binding=$(( (RSS1-RSS0)*1024/N ))"
echo "register_per_sec=$LAST_RATE"
