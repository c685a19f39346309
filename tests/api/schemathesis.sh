#!/usr/bin/env bash
# schemathesis (PyPI) against the live REST API of the real forkswitch
# binary, from the OpenAPI document it serves, with a fixed seed and a
# bounded number of examples per operation: no 5xx, every response
# (status, content type, headers, body) as the document says, and bodies
# that violate the schema refused. The switch runs for real (SIP on
# 127.0.0.1, port 0), so commands reach the switch core. It runs twice:
# with the records in SQLite, then in PostgreSQL (a throwaway cluster,
# tests/pg_cluster.sh, stopped by PID at the end).
#
#   bash tests/api/schemathesis.sh              # SEED=1 EXAMPLES=40 by default
#
# GET /v1.0/events (the console's Server-Sent Events) is left out: the
# stream never ends, so no response would ever be complete
# (crates/forkswitch/tests/console.rs tests it in a browser).
#
# Only 127.0.0.1 is used; only the process started here is stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."
SEED="${SEED:-1}"
EXAMPLES="${EXAMPLES:-40}"
KEY="schemathesis-$(date +%s%N)"
command -v st >/dev/null || python3 -m pip install --quiet 'schemathesis>=4,<5'
cargo build -q -p forkswitch
BIN="${CARGO_TARGET_DIR:-target}/debug/forkswitch"
work=$(mktemp -d)
pid=""
. tests/pg_cluster.sh
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; pg_stop; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# Runs forkswitch with the [database] section $1 and schemathesis against it.
against() {
cat > "$work/forkswitch.toml" <<TOML
[sip]
udp = ["127.0.0.1:0"]
tcp = ["127.0.0.1:0"]
[http]
listen = "127.0.0.1:0"
[log]
level = "info"
$1
[[customers]]
id = "5e4a0680-804e-11ec-8477-2fea5968d85b"
name = "schemathesis"
api_keys = ["$KEY"]
[[domains]]
name = "test"
aliases = ["127.0.0.1"]
customer_id = "5e4a0680-804e-11ec-8477-2fea5968d85b"
[[extensions]]
name = "test11"
domain = "test"
password = "test11-secret"
[[groups]]
number = "800"
domain = "test"
destinations = [{ type = "endpoint", target = "test11@test" }]
TOML
: > "$work/log"
"$BIN" run --config "$work/forkswitch.toml" --log-format json > "$work/log" 2>&1 &
pid=$!
addr=""
for _ in $(seq 200); do
    addr=$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    try: v = json.loads(line)
    except ValueError: continue
    if v.get("message") == "http listening": print(v["addr"]); break
' "$work/log")
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/log" >&2; exit 1; }
    sleep 0.05
done
[ -n "$addr" ] || { echo "the API did not start" >&2; cat "$work/log" >&2; exit 1; }
URL="http://$addr"
echo "== schemathesis against $URL, records in $2 (seed $SEED, $EXAMPLES examples per operation)"
# schemathesis keeps a cache in its working directory: not in the repository.
(cd "$work" && st run "$URL/v1.0/openapi.json" --url "$URL" \
    -H "Authorization: Bearer $KEY" \
    --seed "$SEED" -n "$EXAMPLES" \
    --exclude-path /v1.0/events \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,negative_data_rejection)
kill -0 "$pid" || { echo "forkswitch died under schemathesis" >&2; cat "$work/log" >&2; exit 1; }
echo "schemathesis ($2): passed, forkswitch still up"
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}

against "[database]
path = \"$work/forkswitch.db\"" SQLite
pg_start
against "[database]
url = \"$PG_URL\"" PostgreSQL
