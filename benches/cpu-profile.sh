#!/usr/bin/env bash
# Load-independent cost of mxgate per session and per message: user-space
# instructions (valgrind callgrind) and syscalls (strace -c) of the mxgate
# process over fixed smtp-source runs through mxgate to one smtp-sink, and
# HAProxy's instructions over the same runs for comparison.
#
#   benches/cpu-profile.sh            # (a) 200 sessions x 1 msg, (b) -d 4 sessions x 1000 msgs
#
# Wall-clock benchmarks on a shared 2-CPU machine move with every other
# process; these counts do not, so they show what a change did
# (docs/performance.md, "Tuning"). Needs root (smtp-sink -u nobody), valgrind,
# strace, haproxy, postfix (smtp-sink, smtp-source) and a release build.
# Uses 127.0.0.221-223, port PROFILE_PORT (2700). Environment: A_SESSIONS (200),
# B_MESSAGES (1000), LOG_LEVEL (warn; "info" writes the session-end line),
# PROFILE_KEEP (a directory: the callgrind outputs are copied there, for
# callgrind_annotate --inclusive=yes FILE), SCENARIOS ("a b"), HAPROXY (1;
# 0 skips HAProxy's run), SYSCALLS (1; 0 skips the strace run), MXGATE_BIN
# (a binary to profile instead of building target/release/mxgate).
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
root=$(pwd)
port=${PROFILE_PORT:-2700}
A_SESSIONS=${A_SESSIONS:-200}
B_MESSAGES=${B_MESSAGES:-1000}
LOG_LEVEL=${LOG_LEVEL:-warn}
ip_sink=127.0.0.221 ip_mx=127.0.0.222 ip_ha=127.0.0.223

for tool in valgrind callgrind_control callgrind_annotate strace haproxy smtp-sink smtp-source ss; do
  command -v "$tool" >/dev/null || { echo "cpu-profile: $tool is missing" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "cpu-profile: run as root (smtp-sink -u nobody)" >&2; exit 1; }
if [ -n "${MXGATE_BIN:-}" ]; then
  bin=$(realpath "$MXGATE_BIN")
else
  cargo build --release --quiet
  bin=$root/target/release/mxgate
fi

BENCH_NAME=cpu-profile
LISTEN_WAIT=300 # valgrind starts slowly
# shellcheck source=benches/lib.sh
. "$root/benches/lib.sh"
start_work cpu-profile

smtp-sink -u nobody "$ip_sink:$port" 4096 >"$work/sink.log" 2>&1 &
pids+=($!)
wait_listen "$ip_sink:$port"
mkdir -p "$work/mx"
cat >"$work/mx/mxgate.toml" <<EOF
[node]
name = "profile"
data_dir = "data"
policy = "cluster.toml"
drain_timeout = "1s"

[[smtp]]
name = "profile"
listen = "$ip_mx:$port"
hostname = "mxgate.bench.example"
max_sessions_per_client = 30000
greet_delay = "0s"

[log]
level = "$LOG_LEVEL"
EOF
cat >"$work/mx/cluster.toml" <<EOF
[upstream]
xclient = true
tls = "none"

[members.sink]
smtp = "$ip_sink:$port"
EOF
cat >"$work/haproxy.cfg" <<EOF
global
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 5m
    timeout server 5m
    no option tcp-smart-accept
    no option tcp-smart-connect
frontend smtp
    bind $ip_ha:$port
    default_backend sink
backend sink
    balance source
    server sink $ip_sink:$port
EOF

# source_run IP SCENARIO: the fixed smtp-source run of a scenario.
source_run() {
  case $2 in
    a) smtp-source -M bench.example -s 20 -m "$A_SESSIONS" -l 4096 "$1:$port" ;;
    b) smtp-source -M bench.example -d -s 4 -m "$B_MESSAGES" -l 4096 "$1:$port" ;;
  esac
}
units() { case $1 in a) echo "$A_SESSIONS" ;; b) echo "$B_MESSAGES" ;; esac; }
unit_name() { case $1 in a) echo session ;; b) echo message ;; esac; }

# callgrind NAME IP SCENARIO CMD...: instructions per unit of CMD over one run.
callgrind() {
  local name=$1 ip=$2 s=$3 pid total
  shift 3
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.$name.$s.out" --dump-instr=no "$@" \
    >"$work/cg.$name.$s.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  wait_listen "$ip:$port"
  source_run "$ip" a >/dev/null 2>&1 || true # warm-up
  callgrind_control -z "$pid" >/dev/null 2>&1
  source_run "$ip" "$s" >"$work/source.out" 2>&1 || { echo "cpu-profile: smtp-source failed: $(cat "$work/source.out")" >&2; exit 1; }
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  if [ -n "${PROFILE_KEEP:-}" ]; then
    mkdir -p "$PROFILE_KEEP"
    cp "$(ls -t "$work/cg.$name.$s.out".* | head -n1)" "$PROFILE_KEEP/callgrind.$name.$s.out"
  fi
  total=$(callgrind_annotate "$(ls -t "$work/cg.$name.$s.out".* | head -n1)" 2>/dev/null |
    awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
  awk -v t="$total" -v n="$(units "$s")" -v name="$name" -v s="$s" -v u="$(unit_name "$s")" \
    'BEGIN { printf "%-8s (%s) user-space instructions per %s: %.1f k\n", name, s, u, t / n / 1000 }'
}

# syscalls NAME IP SCENARIO CMD...: syscalls per unit of CMD's process over one run.
syscalls() {
  local name=$1 ip=$2 s=$3 pid sp
  shift 3
  "$@" >"$work/$name.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  wait_listen "$ip:$port"
  source_run "$ip" a >/dev/null 2>&1 || true # warm-up
  strace -c -f -p "$pid" -o "$work/strace.$name.$s" 2>/dev/null &
  sp=$!
  sleep 1
  source_run "$ip" "$s" >/dev/null 2>&1
  sleep 0.5
  kill -INT "$sp"
  wait "$sp" 2>/dev/null || true
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  awk -v n="$(units "$s")" -v s="$s" -v u="$(unit_name "$s")" -v name="$name" '
    $NF == "total" { total = $4 }
    NR > 2 && $1 ~ /^[0-9.]+$/ && $NF != "total" { detail = detail sprintf(" %s %.2f", $NF, $4 / n) }
    END { printf "%-8s (%s) syscalls per %s: %.2f (%s )\n", name, s, u, total / n, detail }' "$work/strace.$name.$s"
}

for s in ${SCENARIOS:-a b}; do
  callgrind mxgate "$ip_mx" "$s" "$bin" serve -c "$work/mx/mxgate.toml"
  [ "${HAPROXY:-1}" = 0 ] || callgrind haproxy "$ip_ha" "$s" haproxy -db -f "$work/haproxy.cfg"
  if [ "${SYSCALLS:-1}" != 0 ]; then
    syscalls mxgate "$ip_mx" "$s" "$bin" serve -c "$work/mx/mxgate.toml"
    [ "${HAPROXY:-1}" = 0 ] || syscalls haproxy "$ip_ha" "$s" haproxy -db -f "$work/haproxy.cfg"
  fi
done
