# Sourced by the fork3 benchmarks (fork3.sh, overload.sh): builds the
# release binary, makes a work directory (removed on exit with every
# process started here), picks run-time ports for three phones (P1 P2 P3)
# and the switch (PS), and writes fs.toml there: ring group 800 rings the
# three phones, 127.0.0.1 is a carrier. FS_EXTRA is appended to the config.
# Defines start_server (fresh database, waits for "forkswitch ready"),
# rcvbuf_errors and SIPP_COMMON.
# FS_BIN: another binary to measure (e.g. a baseline), not built here.
if [ -n "${FS_BIN:-}" ]; then
    BIN=$(realpath "$FS_BIN")
else
    cargo build --release -p forkswitch >/dev/null 2>&1
    BIN=$PWD/target/release/forkswitch
fi
SCN=$PWD/sipp-scenarios
WORK=$(mktemp -d)
PIDS=()
# KEEP=1 keeps the work directory (SIPp error files, the server's log).
cleanup() {
    for p in "${PIDS[@]}" ${FS_PID:-}; do kill "$p" 2>/dev/null || true; done
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
cd "$WORK"

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P1=$(free_port); P2=$(free_port); P3=$(free_port); PS=$(free_port)
CUST=5e4a0680-804e-11ec-8477-2fea5968d85b
cat > fs.toml <<TOML
[sip]
udp = ["127.0.0.1:$PS"]
recv_buffer_bytes = 16777216
send_buffer_bytes = 16777216
[log]
level = "info"
[database]
path = "fs.db"
[http]
listen = "127.0.0.1:0"
${FS_EXTRA:-}
[[customers]]
id = "$CUST"
[[domains]]
name = "test"
customer_id = "$CUST"
[[carriers]]
name = "bench"
address = "127.0.0.1:9"
inbound_sources = ["127.0.0.1/32"]
inbound_domain = "test"
[[groups]]
number = "800"
domain = "test"
destinations = [
  { type = "sip", target = "sip:a@127.0.0.1:$P1" },
  { type = "sip", target = "sip:b@127.0.0.1:$P2" },
  { type = "sip", target = "sip:c@127.0.0.1:$P3" },
]
TOML
start_server() {
    rm -f fs.db fs.db-wal fs.db-shm
    "$BIN" run --config fs.toml --log-format json > fs.log 2>&1 &
    FS_PID=$!
    for _ in $(seq 1 100); do grep -q "forkswitch ready" fs.log && break; sleep 0.1; done
    grep -q "forkswitch ready" fs.log || { cat fs.log; exit 1; }
}
rcvbuf_errors() { awk '/^Udp:/{n++} /^Udp:/&&n==2{print $6}' /proc/net/snmp; }
SIPP_COMMON=(-i 127.0.0.1 -buff_size 4194304 -nostdin -trace_stat -fd 1)
