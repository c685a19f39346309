# Sourced by tests/api/schemathesis.sh and the benchmark scripts: a throwaway PostgreSQL cluster with
# the server's stock durability settings (fsync and synchronous_commit on),
# in a temp dir, on a free 127.0.0.1 port with its own socket dir, run as
# the postgres OS user, stopped by its PID.
#   pg_start      -> sets PG_URL, PG_PID, PG_DIR (creates database "bench")
#   pg_stop       -> fast shutdown by PID, removes the dir
#   pg_cpu_ticks  -> user+system clock ticks of the server and its children
#                    (live and ended)
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
pg_as() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_start() {
  PG_DIR=$(mktemp -d /tmp/pgcluster.XXXX)
  [ "$(id -u)" = 0 ] && chown postgres: "$PG_DIR"
  local port; port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  pg_as "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
  pg_as "$PG_BIN/postgres" -D "$PG_DIR/data" -p "$port" -k "$PG_DIR" \
      -c listen_addresses=127.0.0.1 -c max_connections=50 -c shared_buffers=256MB > "$PG_DIR/server.log" 2>&1 &
  for _ in $(seq 100); do "$PG_BIN/pg_isready" -q -h "$PG_DIR" -p "$port" && break; sleep 0.1; done
  # The postmaster's own PID (the background job is runuser's).
  PG_PID=$(head -1 "$PG_DIR/data/postmaster.pid")
  "$PG_BIN/psql" -X -q -h "$PG_DIR" -p "$port" -U postgres -c "CREATE DATABASE bench" postgres
  PG_PORT=$port; PG_URL="postgres://postgres@127.0.0.1:$port/bench"
}
pg_stop() {
  if [ -n "${PG_PID:-}" ] && kill -INT "$PG_PID" 2>/dev/null; then
    for _ in $(seq 100); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  [ -n "${PG_DIR:-}" ] && rm -rf "$PG_DIR"
  PG_PID=""; PG_DIR=""; return 0
}
pg_cpu_ticks() {
  # The postmaster's own time and its reaped children's (backends that
  # ended), plus the live children's.
  local total p
  total=$(awk '{print $14 + $15 + $16 + $17}' /proc/$PG_PID/stat)
  for p in $(ps -o pid= --ppid "$PG_PID"); do
    [ -r /proc/$p/stat ] && total=$((total + $(awk '{print $14 + $15}' /proc/$p/stat)))
  done
  echo "$total"
}
