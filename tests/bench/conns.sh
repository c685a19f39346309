#!/usr/bin/env bash
# Connection benchmark: REGISTER over TLS and over WSS with N connections
# held open (default 10000), one extension per connection, digest auth.
#
#   bash tests/bench/conns.sh [N] [PARALLEL]
#
# For each transport it starts a fresh forkswitch (release build, certificate
# from `forkswitch gen-cert`), reads its RSS, lets the client
# (crates/forkswitch/examples/register_conns.rs) open N connections and
# register over each (PARALLEL handshakes in flight, default 64), reads the
# RSS again with every connection still open, and prints
#
#   tls_conns=N rss_kb_per_conn=K register_per_sec=R
#   wss_conns=N rss_kb_per_conn=K register_per_sec=R
#
# (a registration is the whole digest exchange; the connection's TLS or
# WebSocket handshake is part of the time). The client runs on the same 2
# cores as the server. Kamailio's published figures for comparison (not run
# here): about 4.5 kB per TCP connection and +61 kB per TLS connection.
# Only 127.0.0.1 is used. Stops only the processes it started.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-10000}
PARALLEL=${2:-64}
cargo build --release -p forkswitch --bin forkswitch --example register_conns >/dev/null 2>&1
BIN=$PWD/target/release/forkswitch
CLIENT=$PWD/target/release/examples/register_conns
WORK=$(mktemp -d)
FS_PID=""
CL_PID=""
cleanup() {
    [ -n "$CL_PID" ] && kill "$CL_PID" 2>/dev/null || true
    [ -n "$FS_PID" ] && kill "$FS_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
# Both sides hold N sockets (plus the server's own files).
want=$((N * 2 + 1024)); hard=$(ulimit -Hn)
[ "$hard" != unlimited ] && [ "$want" -gt "$hard" ] && want=$hard
ulimit -n "$want"

"$BIN" gen-cert "$WORK/certs" >/dev/null
CUST=5e4a0680-804e-11ec-8477-2fea5968d85b
python3 - "$N" "$WORK" "$CUST" <<'PY'
import sys
n, work, cust = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(f"{work}/fs.toml", "w") as f:
    f.write('[sip]\nudp = ["127.0.0.1:0"]\ntls = ["127.0.0.1:0"]\nwss = ["127.0.0.1:0"]\n')
    f.write(f'tcp_max_connections_per_ip = {n + 100}\ntcp_idle_timeout_secs = 3600\n')
    f.write(f'[tls]\ncert = "{work}/certs/cert.pem"\nkey = "{work}/certs/key.pem"\n')
    f.write('[log]\nlevel = "info"\n[database]\npath = ""\n[http]\nlisten = "127.0.0.1:0"\n')
    f.write('[overload]\nmax_register_rate = 0\n')
    f.write('[registrar]\nalgorithms = ["MD5"]\nban_max_failures = 0\n')
    f.write(f'[[customers]]\nid = "{cust}"\n[[domains]]\nname = "test"\ncustomer_id = "{cust}"\n')
    for i in range(n):
        f.write(f'[[extensions]]\nname = "b{i:06d}"\ndomain = "test"\npassword = "pw{i:06d}"\n')
PY
cd "$WORK"

rss_kb() { awk '/VmRSS/{print $2}' "/proc/$FS_PID/status"; }

run() {
    local transport=$1 port rss0 rss1 line rate
    "$BIN" run --config fs.toml --log-format json > "fs-$transport.log" 2>&1 &
    FS_PID=$!
    port=""
    for _ in $(seq 1 600); do
        if grep -q "forkswitch ready" "fs-$transport.log" 2>/dev/null; then
            port=$(python3 - "fs-$transport.log" "${transport^^}" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    try:
        v = json.loads(line)
    except ValueError:
        continue
    if v.get("message") == "listening" and v.get("transport") == sys.argv[2]:
        print(v["addr"].rsplit(":", 1)[1])
        break
PY
)
            break
        fi
        sleep 0.1
    done
    [ -n "$port" ] || { echo "server did not start"; cat "fs-$transport.log"; exit 1; }
    sleep 1
    rss0=$(rss_kb)
    mkfifo "hold-$transport"
    "$CLIENT" --transport "$transport" --server "127.0.0.1:$port" --ca certs/cert.pem \
        --conns "$N" --parallel "$PARALLEL" < "hold-$transport" > "client-$transport.out" 2> "client-$transport.err" &
    CL_PID=$!
    exec 3> "hold-$transport"
    for _ in $(seq 1 3000); do
        grep -q register_per_sec "client-$transport.out" && break
        kill -0 "$CL_PID" 2>/dev/null || break
        sleep 0.2
    done
    line=$(cat "client-$transport.out")
    [ -n "$line" ] || { echo "client failed:"; cat "client-$transport.err"; exit 1; }
    # Let the last registrations' transactions finish (reliable transport:
    # Timer J is 0), then read the memory with every connection open.
    sleep 2
    rss1=$(rss_kb)
    echo "$transport: $line rss_kb_before=$rss0 rss_kb_held=$rss1" >&2
    head -3 "client-$transport.err" >&2 || true
    rate=$(echo "$line" | grep -o 'register_per_sec=[0-9]*' | cut -d= -f2)
    echo "${transport}_conns=$N rss_kb_per_conn=$(python3 -c "print(round(($rss1-$rss0)/$N, 1))") register_per_sec=$rate"
    exec 3>&-
    wait "$CL_PID" 2>/dev/null || true
    CL_PID=""
    kill "$FS_PID" 2>/dev/null || true
    wait "$FS_PID" 2>/dev/null || true
    FS_PID=""
}

run tls
run wss
