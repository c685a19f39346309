#!/usr/bin/env bash
# Runs schemathesis (PyPI) against a live API from its own OpenAPI document,
# with a fixed seed and a bounded number of examples: no 5xx, every response
# (status, content type, headers, body) as the document says, and bodies that
# violate the schema refused. The API runs as the `standalone` example (no
# switch: click-to-call is refused, hangups find nothing); point URL at the
# real binary to test that instead.
#
#   crates/api/schemathesis.sh            # builds and starts the example
#   URL=http://127.0.0.1:8080 KEY=... crates/api/schemathesis.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
SEED="${SEED:-1}"
EXAMPLES="${EXAMPLES:-50}"
KEY="${KEY:-standalone-key}"
if ! command -v st >/dev/null; then
    python3 -m pip install --quiet 'schemathesis>=4,<5'
fi
pid=""
if [ -z "${URL:-}" ]; then
    port="${PORT:-18080}"
    URL="http://127.0.0.1:${port}"
    cargo build -p api --example standalone
    "${CARGO_TARGET_DIR:-target}/debug/examples/standalone" "127.0.0.1:${port}" &
    pid=$!
    trap 'kill "$pid" 2>/dev/null || true' EXIT
    for _ in $(seq 100); do
        curl -fsS "${URL}/v1.0/openapi.json" >/dev/null 2>&1 && break
        sleep 0.1
    done
fi
# schemathesis keeps a cache in its working directory: not in the repository.
cd "$(mktemp -d)"
st run "${URL}/v1.0/openapi.json" --url "${URL}" \
    -H "Authorization: Bearer ${KEY}" \
    --seed "${SEED}" -n "${EXAMPLES}" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,negative_data_rejection
