#!/usr/bin/env bash
# mxgate against HAProxy (TCP mode) and nginx's mail proxy, in front of one
# Postfix smtp-sink, driven by Postfix smtp-source. One machine, one run.
#
#   benches/smtp-compare.sh            # full run: 5 rounds, the counts of issue 4 (about 5 minutes after the build)
#   benches/smtp-compare.sh --smoke    # tiny counts, 1 round, 100-session RSS step (CI)
#
# Run as root on Debian: it installs haproxy, nginx-light, libnginx-mod-mail
# (and postfix, python3) with apt when they are missing, builds mxgate
# (`cargo build --profile dist`; `release` for --smoke), starts every process
# it needs on 127.0.0.0/8 and stops all of them on exit.
#
# Contenders, each on its own address, same port (BENCH_PORT):
#   direct   127.0.0.201  smtp-sink itself (the backend of all others)
#   mxgate   127.0.0.202  dist build, one member = the sink, xclient = false,
#                         worker_threads MXGATE_THREADS (0 = one per CPU): the
#                         same job as HAProxy's, which tells the sink nothing
#                         of the client either (the ratio issue 4 sets)
#   mxgate-xc 127.0.0.206 the same with xclient = true: the sink learns the
#                         real client (connect, greeting, EHLO, XCLIENT, EHLO
#                         per session: two more round trips to the sink)
#   haproxy  127.0.0.203  mode tcp, balance source, nbthread HAPROXY_THREADS (nproc)
#   nginx    127.0.0.204  mail proxy, smtp_auth none, xclient on, auth_http
#                         answered by the same nginx (http server on BENCH_PORT+1)
#   (127.0.0.205: a fresh mxgate for the idle-session memory step)
#
# Scenarios (smtp-source; it does not pipeline):
#   a  one 4 KiB message per session, 20 parallel sessions, 5000 sessions
#   b  4 persistent sessions (-d) carrying 20000 messages of 4 KiB
#   c  1 MiB messages, 4 persistent sessions (-d), 500 messages
# Each cell is the median of ROUNDS runs; every round runs every contender
# once per scenario, in an order rotated by one each round. "front CPU s" is
# the user+system CPU the front's processes used during the run (median).
#
# Environment (all optional):
#   ROUNDS (5; smoke 1)  SCALE=full|tiny (--smoke sets tiny)
#   SCENARIOS ("a b c": the scenarios to run, e.g. "a" for many rounds of (a) alone)
#   A_SESSIONS A_PARALLEL B_MESSAGES B_SESSIONS C_MESSAGES C_SESSIONS
#   MSG_SIZE (4096) C_SIZE (1048576) RSS_SESSIONS (5000; smoke 100; 0 skips;
#     the after-MAIL variant, which holds member connections, uses at most 250)
#   CONTENDERS ("direct mxgate mxgate-xc haproxy nginx") BENCH_PORT (2600; smoke: by PID)
#   BENCH_OUT (target/smtp-compare): results.tsv, table.txt, rss.txt are kept there
#   BENCH_NO_INSTALL=1: never call apt-get
#   MXGATE_PROFILE (dist; smoke: release): the cargo profile mxgate is built with
#   MXGATE_BIN: this mxgate binary instead of building one
#   MXGATE_THREADS (0, mxgate's default [node] worker_threads: one per CPU)
#   HAPROXY_THREADS (nproc, HAProxy's own default nbthread)
#   NGINX_WORKERS (nproc)
#   The defaults run each front as it ships; MXGATE_THREADS=2 or
#   HAPROXY_THREADS=1 NGINX_WORKERS=1 compare them at equal thread counts.
#
# Loopback port pressure: scenario (a) costs up to 4 connections per session
# (client, member, nginx's auth_http); a full run opens about 35000 per round.
# Linux reuses TIME_WAIT ports for outgoing loopback connections only with
# net.ipv4.tcp_tw_reuse = 1 or 2 (2 is the kernel default); if it is 0 the
# script sets it to 2 for the run and restores it on exit. smtp-source cannot
# pick a source address, so the client side always comes from 127.0.0.1.
set -euo pipefail
export LC_ALL=C

cd "$(dirname "$0")/.."
root=$(pwd)

smoke=0
for arg in "$@"; do
  case $arg in
    --smoke) smoke=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "smtp-compare: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

if [ "$smoke" = 1 ]; then
  SCALE=${SCALE:-tiny}
  ROUNDS=${ROUNDS:-1}
  RSS_SESSIONS=${RSS_SESSIONS:-100}
  BENCH_PORT=${BENCH_PORT:-$((3000 + $$ % 2000))}
fi
SCALE=${SCALE:-full}
ROUNDS=${ROUNDS:-5}
RSS_SESSIONS=${RSS_SESSIONS:-5000}
BENCH_PORT=${BENCH_PORT:-2600}
CONTENDERS=${CONTENDERS:-"direct mxgate mxgate-xc haproxy nginx"}
SCENARIOS=${SCENARIOS:-"a b c"}
for s in $SCENARIOS; do
  case $s in a | b | c) ;; *) echo "smtp-compare: unknown scenario $s in SCENARIOS (a, b, c)" >&2; exit 2 ;; esac
done
BENCH_OUT=${BENCH_OUT:-$root/target/smtp-compare}
MSG_SIZE=${MSG_SIZE:-4096}
C_SIZE=${C_SIZE:-1048576}
case $SCALE in
  full)
    A_SESSIONS=${A_SESSIONS:-5000} A_PARALLEL=${A_PARALLEL:-20}
    B_MESSAGES=${B_MESSAGES:-20000} B_SESSIONS=${B_SESSIONS:-4}
    C_MESSAGES=${C_MESSAGES:-500} C_SESSIONS=${C_SESSIONS:-4}
    ;;
  tiny)
    A_SESSIONS=${A_SESSIONS:-200} A_PARALLEL=${A_PARALLEL:-20}
    B_MESSAGES=${B_MESSAGES:-400} B_SESSIONS=${B_SESSIONS:-4}
    C_MESSAGES=${C_MESSAGES:-8} C_SESSIONS=${C_SESSIONS:-4}
    ;;
  *) echo "smtp-compare: SCALE must be full or tiny" >&2; exit 2 ;;
esac
MXGATE_THREADS=${MXGATE_THREADS:-0}
HAPROXY_THREADS=${HAPROXY_THREADS:-$(nproc)}
NGINX_WORKERS=${NGINX_WORKERS:-$(nproc)}
RUN_TIMEOUT=${RUN_TIMEOUT:-600}   # seconds; one smtp-source run never takes longer

BENCH_NAME=smtp-compare
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"

# ---------------------------------------------------------------- install
have_all() {
  command -v smtp-sink >/dev/null && command -v smtp-source >/dev/null &&
    command -v haproxy >/dev/null && command -v nginx >/dev/null &&
    command -v python3 >/dev/null && command -v ss >/dev/null &&
    [ -e /usr/lib/nginx/modules/ngx_mail_module.so ]
}
if ! have_all; then
  [ "${BENCH_NO_INSTALL:-0}" = 1 ] && die "tools missing and BENCH_NO_INSTALL=1"
  command -v apt-get >/dev/null || die "tools missing and no apt-get"
  [ "$(id -u)" = 0 ] || die "run as root (apt-get install)"
  log "installing haproxy nginx-light libnginx-mod-mail postfix python3 with apt"
  export DEBIAN_FRONTEND=noninteractive
  # Postfix asks what kind of mail system this is: none, only its binaries are used.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  # policy-rc.d keeps the packages from starting their system services.
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
  fi
  apt_status=0
  apt-get install -y -qq --no-install-recommends \
    haproxy nginx-light libnginx-mod-mail postfix python3 iproute2 procps >/dev/null || apt_status=$?
  if [ "$made_policy" = 1 ]; then rm -f "$policy"; fi
  [ "$apt_status" = 0 ] || die "apt-get install failed ($apt_status)"
  have_all || die "tools still missing after apt-get install"
fi
[ "$(id -u)" = 0 ] || die "run as root (smtp-sink -u nobody, nginx workers)"

# ---------------------------------------------------------------- build
mxgate_bin=$(build_mxgate "$smoke")

# ---------------------------------------------------------------- processes
work=$(mktemp -d /tmp/smtp-compare.XXXXXX)
chmod 755 "$work"
pids=()
tw_restore=""
cleanup() {
  local status=$?
  stop_started
  if [ -n "$tw_restore" ]; then
    sysctl -qw net.ipv4.tcp_tw_reuse="$tw_restore" || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

tw=$(sysctl -n net.ipv4.tcp_tw_reuse 2>/dev/null || echo unknown)
if [ "$tw" = 0 ]; then
  log "net.ipv4.tcp_tw_reuse is 0: setting 2 (loopback only) for this run"
  sysctl -qw net.ipv4.tcp_tw_reuse=2 && tw_restore=0
fi
log "ephemeral ports: $(sysctl -n net.ipv4.ip_local_port_range 2>/dev/null | tr -s '\t ' '-'), tcp_tw_reuse=$(sysctl -n net.ipv4.tcp_tw_reuse 2>/dev/null || echo '?')"

ip_sink=127.0.0.201 ip_mxgate=127.0.0.202 ip_haproxy=127.0.0.203 ip_nginx=127.0.0.204 ip_rss=127.0.0.205 ip_mxgate_xc=127.0.0.206
port=$BENCH_PORT
auth_port=$((BENCH_PORT + 1))
declare -A addr=(
  [direct]=$ip_sink:$port [mxgate]=$ip_mxgate:$port [mxgate-xc]=$ip_mxgate_xc:$port
  [haproxy]=$ip_haproxy:$port [nginx]=$ip_nginx:$port
)

# wait_listen HOST:PORT PID: until something listens there (10 s), the process still alive.

log "starting smtp-sink on $ip_sink:$port"
# No -d: dumping messages would measure the disk. Backlog 4096.
smtp-sink -u nobody "$ip_sink:$port" 4096 >"$work/sink.log" 2>&1 &
sink_pid=$!
pids+=("$sink_pid")
wait_listen "$ip_sink:$port" "$sink_pid"

# mxgate: config in the work dir; one member, the sink; XCLIENT true or false.
write_mxgate() { # DIR LISTEN XCLIENT
  mkdir -p "$1"
  cat >"$1/mxgate.toml" <<EOF
[node]
name = "bench"
data_dir = "data"
policy = "cluster.toml"
drain_timeout = "1s"
worker_threads = $MXGATE_THREADS   # 0 is the default: one worker per CPU

[[smtp]]
name = "bench"
listen = "$2"
hostname = "mxgate.bench.example"
max_sessions = 30000
max_sessions_per_client = 30000
greet_delay = "0s"

[log]
level = "warn"
EOF
  cat >"$1/cluster.toml" <<EOF
[routing]
affinity = "source-destination"

[upstream]
xclient = $3           # smtp-sink offers XCLIENT; true: connect, greeting, EHLO, XCLIENT, EHLO per session
tls = "none"            # smtp-sink offers no STARTTLS anyway

[members.sink]
smtp = "$ip_sink:$port"
EOF
}
# start_mxgate NAME LISTEN XCLIENT: sets started_pid.
start_mxgate() {
  write_mxgate "$work/$1" "$2" "$3"
  "$mxgate_bin" check-config -c "$work/$1/mxgate.toml" >/dev/null
  "$mxgate_bin" serve -c "$work/$1/mxgate.toml" >"$work/$1.log" 2>&1 &
  started_pid=$!
  pids+=("$started_pid")
}
start_mxgate mxgate "$ip_mxgate:$port" false
mxgate_pid=$started_pid
start_mxgate mxgate-xc "$ip_mxgate_xc:$port" true
mxgate_xc_pid=$started_pid

cat >"$work/haproxy.cfg" <<EOF
global
    nbthread $HAPROXY_THREADS
    # about 2 fds per connection must fit under the hard RLIMIT_NOFILE (20000 here)
    maxconn 8000
    # no logging: the others do not log per session either

defaults
    mode tcp
    timeout connect 5s
    timeout client 5m
    timeout server 5m
    # SMTP is server-speaks-first: no delayed ACK games on either side.
    no option tcp-smart-accept
    no option tcp-smart-connect

frontend smtp
    bind $ip_haproxy:$port
    maxconn 8000
    default_backend sink

backend sink
    balance source
    server sink $ip_sink:$port
EOF
haproxy -c -q -f "$work/haproxy.cfg"
haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
haproxy_pid=$!
pids+=("$haproxy_pid")

mkdir -p "$work/nginx/tmp" "$work/nginx/logs"
cat >"$work/nginx/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_mail_module.so;
worker_processes $NGINX_WORKERS;
worker_rlimit_nofile 16384;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
daemon off;
events { worker_connections 8000; }

# The auth_http answer: every session goes to the sink.
http {
    access_log off;
    client_body_temp_path $work/nginx/tmp;
    proxy_temp_path $work/nginx/tmp;
    fastcgi_temp_path $work/nginx/tmp;
    uwsgi_temp_path $work/nginx/tmp;
    scgi_temp_path $work/nginx/tmp;
    server {
        listen $ip_nginx:$auth_port;
        location = /auth {
            add_header Auth-Status OK;
            add_header Auth-Server $ip_sink;
            add_header Auth-Port $port;
            return 200 "";
        }
    }
}

mail {
    server_name nginx.bench.example;
    auth_http $ip_nginx:$auth_port/auth;
    # Like mxgate: tell the backend who the client is (smtp-sink offers XCLIENT).
    xclient on;
    proxy_pass_error_message on;
    # What the sink offers and is used after the proxy goes transparent.
    smtp_capabilities "SIZE 52428800" 8BITMIME;
    # nginx's mail proxy sets no TCP_NODELAY towards the backend: with the
    # default one-page client buffer a 4 KiB message leaves in two writes and
    # the second waits for the backend's delayed ACK (Nagle, ~40 ms per
    # message). Buffers larger than a message keep most messages to one write.
    smtp_client_buffer 64k;
    proxy_buffer 64k;
    server {
        listen $ip_nginx:$port;
        protocol smtp;
        smtp_auth none;
        proxy on;
    }
}
EOF
nginx -t -q -c "$work/nginx/nginx.conf" -p "$work/nginx" -e "$work/nginx/logs/error.log"
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -e "$work/nginx/logs/error.log" >"$work/nginx.log" 2>&1 &
nginx_pid=$!
pids+=("$nginx_pid")

wait_listen "$ip_mxgate:$port" "$mxgate_pid"
wait_listen "$ip_mxgate_xc:$port" "$mxgate_xc_pid"
wait_listen "$ip_haproxy:$port" "$haproxy_pid"
wait_listen "$ip_nginx:$port" "$nginx_pid"
wait_listen "$ip_nginx:$auth_port" "$nginx_pid"

# ---------------------------------------------------------------- runs
scenario_args() { # SCENARIO -> smtp-source arguments
  case $1 in
    a) echo "-s $A_PARALLEL -m $A_SESSIONS -l $MSG_SIZE" ;;
    b) echo "-d -s $B_SESSIONS -m $B_MESSAGES -l $MSG_SIZE" ;;
    c) echo "-d -s $C_SESSIONS -m $C_MESSAGES -l $C_SIZE" ;;
  esac
}
scenario_name() {
  case $1 in
    a) echo "(a) $A_SESSIONS sessions x 1 msg, $A_PARALLEL parallel" ;;
    b) echo "(b) $B_SESSIONS sessions x $((B_MESSAGES / B_SESSIONS)) msgs (-d)" ;;
    c) echo "(c) $C_MESSAGES x $((C_SIZE / 1024)) KiB, $C_SESSIONS sessions (-d)" ;;
  esac
}

# cpu_ticks PID...: user + system clock ticks of these processes so far.
hz=$(getconf CLK_TCK)
# front_pids CONTENDER: the processes doing the contender's work (none for direct).
front_pids() {
  case $1 in
    direct) ;;
    mxgate) echo "$mxgate_pid" ;;
    mxgate-xc) echo "$mxgate_xc_pid" ;;
    haproxy) echo "$haproxy_pid" ;;
    nginx) echo "$nginx_pid" $(pgrep -P "$nginx_pid" || true) ;;
  esac
}

# run_one SCENARIO CONTENDER -> "seconds front_cpu_seconds" on stdout, or "FAIL -"
run_one() {
  local args t0 t1 c0 c1 pids
  read -r -a args <<<"$(scenario_args "$1")"
  read -r -a pids <<<"$(front_pids "$2")"
  c0=$(cpu_ticks "${pids[@]}")
  t0=$EPOCHREALTIME
  if timeout "$RUN_TIMEOUT" smtp-source -M bench.example "${args[@]}" "${addr[$2]}" \
    >"$work/source.out" 2>&1; then
    t1=$EPOCHREALTIME
    c1=$(cpu_ticks "${pids[@]}")
    awk -v a="$t0" -v b="$t1" -v c="$((c1 - c0))" -v hz="$hz" -v n="${#pids[@]}" \
      'BEGIN { printf "%.3f %s\n", b - a, n ? sprintf("%.2f", c / hz) : "-" }'
  else
    log "smtp-source failed: scenario $1, $2: $(tail -n 3 "$work/source.out" | tr '\n' ' ')"
    echo "FAIL -"
  fi
}

read -r -a contenders <<<"$CONTENDERS"
for c in "${contenders[@]}"; do
  [ -n "${addr[$c]:-}" ] || die "unknown contender $c"
done

# Check every contender carries a message end to end before timing anything.
for c in "${contenders[@]}"; do
  smtp-source -M bench.example -s 1 -m 2 -l 1024 "${addr[$c]}" >"$work/source.out" 2>&1 ||
    die "contender $c does not carry a message: $(cat "$work/source.out")"
done

mkdir -p "$BENCH_OUT"
results=$BENCH_OUT/results.tsv
printf 'round\tscenario\tcontender\tseconds\tfront_cpu_seconds\n' >"$results"
{
  echo "# smtp-compare $(date -u +%Y-%m-%dT%H:%M:%SZ) mxgate $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "# $(nproc) CPUs, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# $(haproxy -v | head -n1); $(nginx -v 2>&1); postfix $(postconf -d -h mail_version 2>/dev/null || echo '?')"
  echo "# threads: mxgate worker_threads=$MXGATE_THREADS, haproxy nbthread=$HAPROXY_THREADS, nginx worker_processes=$NGINX_WORKERS"
} >"$BENCH_OUT/table.txt"

log "SCALE=$SCALE ROUNDS=$ROUNDS contenders: ${contenders[*]}"
n=${#contenders[@]}
failed=0
for round in $(seq "$ROUNDS"); do
  for s in $SCENARIOS; do
    for i in $(seq 0 $((n - 1))); do
      c=${contenders[$(((i + round - 1) % n))]}
      read -r t cpu <<<"$(run_one "$s" "$c")"
      [ "$t" = FAIL ] && failed=$((failed + 1))
      printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$s" "$c" "$t" "$cpu" >>"$results"
      log "round $round/$ROUNDS $(scenario_name "$s"): $c ${t}s (front CPU ${cpu}s)"
    done
  done
done

# ---------------------------------------------------------------- table
# median SCENARIO CONTENDER COLUMN: of the successful runs, or FAIL / -
median() {
  awk -F'\t' -v s="$1" -v c="$2" -v col="$3" '$2 == s && $3 == c && $4 != "FAIL" && $col != "-" { print $col }' "$results" |
    median_of "%.3f"
}
table() {
  local s c runs
  printf '%-40s %-9s %9s %11s %10s %12s %5s\n' scenario contender "median s" "vs haproxy" "vs direct" "front CPU s" runs
  for s in $SCENARIOS; do
    declare -A med=()
    for c in "${contenders[@]}"; do
      med[$c]=$(median "$s" "$c" 4)
    done
    for c in "${contenders[@]}"; do
      runs=$(awk -F'\t' -v s="$s" -v c="$c" '$2 == s && $3 == c && $4 != "FAIL"' "$results" | wc -l)
      awk -v name="$(scenario_name "$s")" -v c="$c" -v m="${med[$c]}" -v h="${med[haproxy]:-}" \
        -v d="${med[direct]:-}" -v cpu="$(median "$s" "$c" 5)" -v runs="$runs/$ROUNDS" '
        function ratio(x, y) { return (x == "-" || y == "" || y == "-" || y == 0) ? "-" : sprintf("%.2fx", x / y) }
        BEGIN { printf "%-40s %-9s %9s %11s %10s %12s %5s\n", name, c, m, ratio(m, h), ratio(m, d), cpu, runs }'
    done
    unset med
  done
}
table | tee -a "$BENCH_OUT/table.txt"
if [ "$smoke" = 1 ]; then
  echo "smoke run: SMTP messages/s of $CONTENDERS with smtp-source, tiny counts, 1 round; it checks only that this script works, its numbers measure nothing (docs/performance.md has the real runs)"
fi

# ---------------------------------------------------------------- idle-session memory
: >"$BENCH_OUT/rss.txt"
if [ "$RSS_SESSIONS" -gt 0 ]; then
  for mode in ehlo mail; do
    count=$RSS_SESSIONS
    # mail: every session also holds a member connection to smtp-sink, which
    # serves at most 256 sessions at once (observed with Postfix 3.7).
    [ "$mode" = mail ] && [ "$count" -gt 250 ] && count=250
    # A fresh mxgate per mode: nothing left over from the timed runs in its heap.
    write_mxgate "$work/rss-$mode" "$ip_rss:$port" true
    "$mxgate_bin" serve -c "$work/rss-$mode/mxgate.toml" >"$work/rss-$mode.log" 2>&1 &
    rss_pid=$!
    pids+=("$rss_pid")
    wait_listen "$ip_rss:$port" "$rss_pid"
    line=$(timeout 300 python3 "$root/benches/idle_sessions.py" "$ip_rss" "$port" "$count" "$rss_pid" "$mode") ||
      die "idle-session step ($mode) failed"
    kill "$rss_pid"
    wait "$rss_pid" 2>/dev/null || true
    echo "mxgate idle sessions ($mode): $line" | tee -a "$BENCH_OUT/rss.txt"
    # Let the sockets of this step leave the listen address before the next instance binds it.
    sleep 1
  done
fi

echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$BENCH_OUT/table.txt"
log "results in $BENCH_OUT (results.tsv, table.txt, rss.txt)"
[ "$failed" = 0 ] || die "$failed smtp-source run(s) failed"
