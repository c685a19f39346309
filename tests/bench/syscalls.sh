#!/usr/bin/env bash
# System calls per fork3 call (issue 24): SIPp UAC -> forkswitch (release)
# -> ring group of 3 SIPp UAS (one answers after 20 ms, two ring and are
# CANCELed), CALLS calls at RATE/s, counted on every thread of the server
# by `perf stat` on the syscall tracepoints (counted in the kernel, not
# traced through ptrace: the server runs at its own pace, so batches are
# as large as the load makes them).
#
#   bash tests/bench/syscalls.sh [RATE] [CALLS]     # default 1000 10000
#   env FS_BIN: the server binary (default: target/release/forkswitch, built first);
#   DB=0: records off ([database] path = "")
#
# Prints `syscalls rate=R calls=N ok=X per_call=S` with the same per thread
# and the most frequent of the system calls a SIP server makes per call,
# and `sleeps_per_call`: voluntary context switches of all its threads. Needs perf (Debian
# linux-perf) and root. Traffic stays on 127.0.0.1; only processes started
# here are stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."
RATE=${1:-1000}
CALLS=${2:-10000}
. tests/bench/fork3_setup.sh
if [ "${DB:-1}" = 0 ]; then sed -i 's|^path = "fs.db"|path = ""|' fs.toml; fi
start_server

uas=()
t=$((CALLS / RATE + 60))s
sipp -sf "$SCN/uas_answer.xml" -d 20 -p "$P1" -m "$CALLS" "${SIPP_COMMON[@]}" -stf a.csv -timeout "$t" >/dev/null 2>&1 & uas+=($!)
sipp -sf "$SCN/uas_ring_cancel_reason.xml" -p "$P2" -m "$CALLS" "${SIPP_COMMON[@]}" -stf b.csv -timeout "$t" >/dev/null 2>&1 & uas+=($!)
sipp -sf "$SCN/uas_ring_cancel_reason.xml" -p "$P3" -m "$CALLS" "${SIPP_COMMON[@]}" -stf c.csv -timeout "$t" >/dev/null 2>&1 & uas+=($!)
PIDS+=("${uas[@]}")
sleep 0.5
NAMES="recvmsg recvmmsg recvfrom sendto sendmsg sendmmsg poll ppoll epoll_wait epoll_pwait futex read write writev pread64 pwrite64 fdatasync fsync"
EVENTS=raw_syscalls:sys_enter
for n in $NAMES; do EVENTS+=",syscalls:sys_enter_$n"; done
perf stat -e "$EVENTS" -p "$FS_PID" --per-thread -x, -o counts.csv >/dev/null 2>&1 &
PERF=$!; PIDS+=("$PERF")
sleep 1
# Voluntary context switches (a thread going to sleep) of every thread.
switches() { for t in /proc/$FS_PID/task/*; do awk '/^voluntary_ctxt_switches/{print $2}' "$t/status"; done | awk '{s += $1} END {print s}'; }
CS0=$(switches)
sipp -sf "$SCN/uac_hold.xml" -s 800 "127.0.0.1:$PS" -d 0 -r "$RATE" -m "$CALLS" -l $((CALLS + 10)) \
    -p 0 "${SIPP_COMMON[@]}" -stf uac.csv -timeout "$t" >/dev/null 2>&1 || true
# The last BYEs and the store's last writes, then the summary.
sleep 2
CS1=$(switches)
kill -INT "$PERF"; wait "$PERF" 2>/dev/null || true
python3 - "$RATE" "$CALLS" "$((CS1 - CS0))" <<'PY'
import csv, re, sys
rate, calls, switches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = list(csv.reader(open("uac.csv"), delimiter=";"))
ok = int(dict(zip(rows[0], rows[-1])).get("SuccessfulCall(C)", 0)) if len(rows) > 1 else 0
threads, names = {}, {}
for r in csv.reader(l for l in open("counts.csv") if l.strip() and not l.startswith("#")):
    if len(r) < 4 or not r[1].strip().isdigit():
        continue
    thread, n, event = re.sub(r"-\d+$", "", r[0].strip()), int(r[1]), r[3]
    if event == "raw_syscalls:sys_enter":
        threads[thread] = threads.get(thread, 0) + n
    else:
        name = event.split("sys_enter_")[-1]
        names[name] = names.get(name, 0) + n
per = lambda n: f"{n / max(ok, 1):.2f}"
total = sum(threads.values())
by_thread = " ".join(f"{k}={per(v)}" for k, v in sorted(threads.items(), key=lambda kv: -kv[1]) if v)
top = " ".join(f"{k}={per(v)}" for k, v in sorted(names.items(), key=lambda kv: -kv[1]) if v >= ok / 10)
print(f"syscalls rate={rate} calls={calls} ok={ok} per_call={per(total)} threads[{by_thread}] top[{top}] "
      f"sleeps_per_call={per(switches)}")
PY
