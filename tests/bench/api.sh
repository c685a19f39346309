#!/usr/bin/env bash
# REST API benchmark: with 100,000 groupcalls stored, the latency of
# `GET /v1.0/groupcalls` (a page of 100) under 200 requests/s, and whether
# that API traffic costs the SIP side: the fork3 clean rate (SIPp UAC ->
# ring group of 3 SIPp UAS, ../shared/bench/run_anchor.sh) stepped without
# and then with the 200 requests/s beside it, in one run.
#
#   bash tests/bench/api.sh ["RATES"] [SECONDS_PER_STEP]   # e.g. "800 1200 1600 2000" 10
#
# N=1000000 stores a million groupcalls; DB=postgres keeps the records in a
# throwaway PostgreSQL cluster (tests/pg_cluster.sh) instead of SQLite;
# RATES="" measures the list latency only.
#
# Last line: `api_list_p99_ms=P fork3_cps=C fork3_cps_with_api=A` (a step is
# clean with 0 failed calls, 0 retransmissions and no UDP drops). Only
# 127.0.0.1 is used; only processes started here are stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
RATES=${1-"800 1200 1600 2000"}
SECS=${2:-10}
N=${N:-100000}
SHARED=${SHARED:-$ROOT/../shared}
ANCHOR=$SHARED/bench/run_anchor.sh
[ -x "$ANCHOR" ] || ANCHOR="bash $ANCHOR"
cargo build -q --release -p forkswitch
cargo build -q --release -p api --example api_load
BIN=$ROOT/target/release/forkswitch
LOAD=$ROOT/target/release/examples/api_load
WORK=$(mktemp -d)
PIDS=()
. "$ROOT/tests/pg_cluster.sh"
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; pg_stop; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
HTTP_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
KEY="bench-$(date +%s%N)"
CUST=5e4a0680-804e-11ec-8477-2fea5968d85b
# The anchor's forkswitch config (same port map as Kamailio's), plus the API.
DB_URL="sqlite:$WORK/bench.db"
if [ "${DB:-sqlite}" = postgres ]; then pg_start; DB_URL=$PG_URL; fi
sed -e "s|^path = .*|url = \"$DB_URL\"|" -e "s|^id = \"$CUST\"$|id = \"$CUST\"\napi_keys = [\"$KEY\"]|" \
    "$SHARED/bench/forkswitch/forkswitch.toml" > "$WORK/fs.toml"
printf '\n[http]\nlisten = "127.0.0.1:%s"\n' "$HTTP_PORT" >> "$WORK/fs.toml"
"$BIN" check-config "$WORK/fs.toml" >/dev/null
# The anchor starts FS_BIN with its own config: this wrapper swaps in ours.
cat > "$WORK/fs-wrapper.sh" <<WRAP
#!/bin/sh
exec "$BIN" run --config "$WORK/fs.toml"
WRAP
chmod +x "$WORK/fs-wrapper.sh"
"$LOAD" seed "$DB_URL" "$CUST" "$N" >/dev/null
# A bulk load's statistics: autovacuum would analyze a real database within
# a minute; without them PostgreSQL plans the page query as a scan and sort.
[ "${DB:-sqlite}" = postgres ] && "$PG_BIN/psql" -X -q -h "$PG_DIR" -p "$PG_PORT" -U postgres -d bench -c ANALYZE
URL="http://127.0.0.1:$HTTP_PORT/v1.0/groupcalls?page_size=100"

# 1. The list latency alone (switch idle), 200 requests/s for 10 s.
"$BIN" run --config "$WORK/fs.toml" > "$WORK/alone.log" 2>&1 &
FS=$!; PIDS+=($FS)
for _ in $(seq 100); do curl -fsS -H "Authorization: Bearer $KEY" "$URL" >/dev/null 2>&1 && break; sleep 0.1; done
alone=$("$LOAD" "$URL" "$KEY" 200 10)
echo "api alone: $alone"
kill "$FS"; wait "$FS" 2>/dev/null || true
P99=$(echo "$alone" | sed -E 's/.*p99_ms=([0-9.]+).*/\1/')

# 2. fork3 stepped, without and with the API load beside it.
clean() { # summary line -> 1 when clean
  echo "$1" | python3 -c '
import re, sys
l = sys.stdin.read()
g = lambda k: int((re.search(r"\b" + k + r"=(\d+)", l) or [0, "1"])[1])
print(1 if g("ok") > 0 and g("failed") == 0 and g("retrans") == 0 and g("udp_rcvbuf_drops") == 0 else 0)'
}
best_plain=0; best_api=0
for r in $RATES; do
  line=$(SUT=forkswitch FS_BIN="$WORK/fs-wrapper.sh" $ANCHOR fork3 "$r" $((r * SECS)) 2>&1 | tail -1)
  echo "fork3 rate=$r: $line"
  [ "$(clean "$line")" = 1 ] && best_plain=$r
  ( sleep 2; "$LOAD" "$URL" "$KEY" 200 "$SECS" > "$WORK/beside.$r" ) &
  BESIDE=$!
  line=$(SUT=forkswitch FS_BIN="$WORK/fs-wrapper.sh" $ANCHOR fork3 "$r" $((r * SECS)) 2>&1 | tail -1)
  wait "$BESIDE" || true
  echo "fork3 rate=$r with api ($(cat "$WORK/beside.$r" 2>/dev/null)): $line"
  [ "$(clean "$line")" = 1 ] && best_api=$r
done
echo "api_list_p99_ms=$P99 fork3_cps=$best_plain fork3_cps_with_api=$best_api"
