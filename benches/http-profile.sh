#!/usr/bin/env bash
# Load-independent cost of mxgate's GINA (HTTP) proxying per request:
# user-space instructions (valgrind callgrind) and syscalls (strace -c) of
# the mxgate process over a fixed wrk run through mxgate's [[http]] listener
# to one nginx backend, and HAProxy's (mode http) over the same run for
# comparison. The HTTP counterpart of benches/cpu-profile.sh.
#
#   benches/http-profile.sh
#
# Wall-clock benchmarks (benches/http-compare.sh) on a shared 2-CPU machine
# move with every other process; these counts do not, so they show what a
# change did (docs/performance.md, "GINA (HTTP)"). Set-up as in
# http-compare.sh: the backend is one nginx worker answering GET / with a
# fixed 612-byte page; mxgate has one member (the backend), [log] level =
# "warn"; HAProxy has `option forwardfor`, `http-reuse always`. Each
# contender: warm-up wrk run, counters zeroed, the timed run
# (wrk -t 2 -c CONNS -d DURATION), counters dumped; per request = total /
# requests wrk counted. Needs root (nginx), valgrind, strace, wrk, haproxy,
# nginx and a release build. Uses 127.0.8.21-23, port PROFILE_PORT (2810).
#
# Environment (all optional): CONNS (16), DURATION (5s), WARMUP (2s),
# HAPROXY (1; 0 skips HAProxy), SYSCALLS (1; 0 skips the strace runs),
# PERF (0; 1 adds a `perf record -g` run of each contender, not under
# valgrind: CPU us per request split into user space, each syscall, other
# kernel work, and, across those, the receivers' TCP input and wake-ups that
# loopback sends run, and preemption at syscall exit; noisy on a shared
# machine; the report is kept in PROFILE_KEEP or target/http-profile),
# PROFILE_KEEP (a directory: the callgrind outputs are copied there, for
# callgrind_annotate --inclusive=yes FILE),
# MXGATE_BIN (the binary; default: cargo build --profile CARGO_PROFILE,
# target/CARGO_PROFILE/mxgate), CARGO_PROFILE (release; "dist" for the
# LTO build, see Cargo.toml).
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
root=$(pwd)
port=${PROFILE_PORT:-2810}
CONNS=${CONNS:-16}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-2s}
ip_backend=127.0.8.21 ip_mx=127.0.8.22 ip_ha=127.0.8.23

for tool in valgrind callgrind_control callgrind_annotate strace wrk haproxy nginx ss; do
  command -v "$tool" >/dev/null || { echo "http-profile: $tool is missing" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "http-profile: run as root (nginx)" >&2; exit 1; }
if [ -z "${MXGATE_BIN:-}" ]; then
  cargo build --profile "${CARGO_PROFILE:-release}" --quiet
  MXGATE_BIN=$root/target/${CARGO_PROFILE:-release}/mxgate
fi
bin=$(realpath "$MXGATE_BIN") # the runs start in their own directories

BENCH_NAME=http-profile
LISTEN_WAIT=300 # valgrind starts slowly
# shellcheck source=benches/lib.sh
. "$root/benches/lib.sh"
start_work http-profile

backend_conf "$work/backend" "$ip_backend:$port"
nginx -c "$work/backend/nginx.conf" -p "$work/backend" -e "$work/backend/logs/error.log" >"$work/backend.log" 2>&1 &
pids+=($!)
wait_listen "$ip_backend:$port"

gina_mxgate_conf "$work/mx" profile "$ip_mx:$port" "$ip_backend:$port"
gina_haproxy_conf "$work/haproxy.cfg" "$ip_ha:$port" "$ip_backend:$port"

# load IP DURATION: one wrk run; prints the number of requests it completed.
load() {
  local out
  out=$(wrk -t 2 -c "$CONNS" -d "$2" "http://$1:$port/" 2>&1) || { echo "http-profile: wrk failed: $out" >&2; exit 1; }
  if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
    echo "http-profile: wrk reported errors: $out" >&2
    exit 1
  fi
  awk '$2 == "requests" && $3 == "in" { print $1 }' <<<"$out"
}

start() { # NAME: replaces the (sub)shell with the contender
  case $1 in
    mxgate) exec "$bin" serve -c "$work/mx/mxgate.toml" ;;
    haproxy) exec haproxy -db -f "$work/haproxy.cfg" ;;
  esac
}
ip_of() { case $1 in mxgate) echo "$ip_mx" ;; haproxy) echo "$ip_ha" ;; esac; }

# callgrind NAME: user-space instructions per request over one timed run.
callgrind() {
  local name=$1 ip pid total n out
  ip=$(ip_of "$name")
  case $name in
    mxgate) set -- "$bin" serve -c "$work/mx/mxgate.toml" ;;
    haproxy) set -- haproxy -db -f "$work/haproxy.cfg" ;;
  esac
  (cd "$work/mx" && exec valgrind --tool=callgrind --callgrind-out-file="$work/cg.$name.out" --dump-instr=no "$@") \
    >"$work/cg.$name.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  wait_listen "$ip:$port"
  load "$ip" "$WARMUP" >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  n=$(load "$ip" "$DURATION")
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  out=$(ls -t "$work/cg.$name.out".* | head -n1)
  if [ -n "${PROFILE_KEEP:-}" ]; then
    mkdir -p "$PROFILE_KEEP"
    cp "$out" "$PROFILE_KEEP/callgrind.$name.out"
  fi
  total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
  awk -v t="$total" -v n="$n" -v name="$name" \
    'BEGIN { printf "%-8s user-space instructions per request: %.1f k (%d requests)\n", name, t / n / 1000, n }'
}

# start_warm NAME: starts the contender (not under valgrind), sets `pid`
# (the caller's local) and runs the warm-up load against it.
start_warm() {
  (cd "$work/mx" && start "$1") >"$work/$1.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  wait_listen "$(ip_of "$1"):$port"
  load "$(ip_of "$1")" "$WARMUP" >/dev/null
}

# syscalls NAME: syscalls per request over one timed run (not under valgrind).
syscalls() {
  local name=$1 ip pid sp n
  ip=$(ip_of "$name")
  start_warm "$name"
  strace -c -f -p "$pid" -o "$work/strace.$name" 2>/dev/null &
  sp=$!
  sleep 1
  n=$(load "$ip" "$DURATION")
  sleep 0.5
  kill -INT "$sp"
  wait "$sp" 2>/dev/null || true
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  awk -v n="$n" -v name="$name" '
    $NF == "total" { total = $4 }
    NR > 2 && $1 ~ /^[0-9.]+$/ && $NF != "total" && $4 / n >= 0.005 { detail = detail sprintf(" %s %.2f", $NF, $4 / n) }
    END { printf "%-8s syscalls per request: %.2f (%s ) over %d requests\n", name, total / n, detail, n }' "$work/strace.$name"
}

# perf_profile NAME: perf record -g (cpu-clock, one sample per 250 us of
# CPU) over one timed run; prints the CPU per request by where it was spent:
# user space, each syscall (its kernel part, including the receiver's TCP
# input that a loopback send runs), other kernel work (softirq, scheduling
# outside a syscall). The report is kept in PROFILE_KEEP.
perf_profile() {
  local name=$1 ip pid pp n keep=${PROFILE_KEEP:-$root/target/http-profile}
  ip=$(ip_of "$name")
  start_warm "$name"
  perf record -e cpu-clock -c 250000 -g -p "$pid" -o "$work/perf.$name.data" >/dev/null 2>&1 &
  pp=$!
  sleep 0.5
  n=$(load "$ip" "$DURATION")
  kill -INT "$pp"
  wait "$pp" 2>/dev/null || true
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  mkdir -p "$keep"
  perf report -i "$work/perf.$name.data" --no-children --sort dso,symbol --stdio \
    >"$keep/perf.$name.txt" 2>/dev/null || true
  perf script -i "$work/perf.$name.data" 2>/dev/null | awk '
    function flush() {
      if (!insample) return
      cls = !kernel ? "user" : (sys != "" ? sys : "kernel-other")
      count[cls]++
      if (rcv) count["(of-which:receiver-tcp-input)"]++
      if (wake) count["(of-which:receiver-wakeup)"]++
      if (preempt) count["(of-which:preempted-at-syscall-exit)"]++
      insample = 0
    }
    /^[^ \t]/ { flush(); insample = 1; kernel = 0; sys = ""; first = 1; rcv = wake = preempt = 0; next }
    /^$/ { flush(); next }
    {
      if (first) { first = 0; if ($0 ~ /kernel\.kallsyms/) kernel = 1 }
      if ($2 ~ /^tcp_v4_rcv/) rcv = 1
      if ($2 ~ /^sock_def_readable/) wake = 1
      if ($2 ~ /^exit_to_user_mode_loop/ && sys == "") preempt = 1
      if (sys == "" && match($0, /__x64_sys_[a-z0-9_]+|do_writev|__sys_sendto|__sys_recvfrom|do_epoll_wait/)) {
        sys = substr($0, RSTART, RLENGTH)
        sub(/^(__x64_sys_|__sys_|do_epoll_|do_)/, "", sys)
        if (sys == "wait") sys = "epoll_wait"
      }
    }
    END { flush(); for (c in count) print c, count[c] }' |
    sort -k2,2nr | awk -v n="$n" -v name="$name" '
      $2 * 250 / n >= 0.05 { line = line sprintf(" %s %.1f", $1, $2 * 250 / n) }
      $1 !~ /^\(/ { total += $2 }
      END { printf "%-8s CPU us per request (perf, %d requests): %.1f =%s\n", name, n, total * 250 / n, line }'
}

contenders="mxgate"
[ "${HAPROXY:-1}" = 0 ] || contenders="mxgate haproxy"
for c in $contenders; do
  callgrind "$c"
done
if [ "${SYSCALLS:-1}" != 0 ]; then
  for c in $contenders; do syscalls "$c"; done
fi
if [ "${PERF:-0}" = 1 ]; then
  for c in $contenders; do perf_profile "$c"; done
fi
