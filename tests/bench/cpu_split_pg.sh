#!/usr/bin/env bash
# ../shared/bench/cpu_split.sh with the records in PostgreSQL: the same
# fork3 load and per-thread CPU of forkswitch, plus the CPU of PostgreSQL's
# processes (server and backends, from /proc) per call. A throwaway cluster
# (tests/pg_cluster.sh) is started and stopped here.
#   flock /tmp/bench.lock bash tests/bench/cpu_split_pg.sh [RATE] [CALLS]
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
RATE=${1:-1500}; CALLS=${2:-15000}
SHARED=${SHARED:-$ROOT/../shared}
. "$ROOT/tests/pg_cluster.sh"
pg_start
trap pg_stop EXIT
W=$(mktemp -d /tmp/cpusplitpg.XXXX)
sed "s|^path = \"forkswitch-bench.db\"|url = \"$PG_URL\"|" "$SHARED/bench/forkswitch/forkswitch.toml" > "$W/fs.toml"
# cpu_split.sh rewrites only a path line: ours has none, so the url stays.
before=$(pg_cpu_ticks)
FS_BIN=${FS_BIN:-$ROOT/target/release/forkswitch} bash "$SHARED/bench/cpu_split.sh" "$RATE" "$CALLS" "$W/fs.toml"
after=$(pg_cpu_ticks)
HZ=$(getconf CLK_TCK)
awk -v a="$after" -v b="$before" -v hz="$HZ" -v n="$CALLS" \
  'BEGIN { printf "postgres (all its processes, whole run) ms_per_call=%.3f\n", (a-b)*1000/hz/n }'
echo "rows: $("$PG_BIN/psql" -X -A -t -h "$PG_DIR" -p "$PG_PORT" -U postgres -d bench \
  -c "SELECT count(*) || ' calls' FROM calls")"
rm -rf "$W"
