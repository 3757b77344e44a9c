#!/usr/bin/env bash
# GINA (HTTP) proxying: mxgate against HAProxy (mode http) and nginx
# (proxy_pass), all in front of the same backend, driven by wrk. One machine,
# one run.
#
#   benches/http-compare.sh            # full run: 5 rounds of 10 s per contender
#   benches/http-compare.sh --smoke    # 1 round of 2 s, few connections (CI)
#
# Run as root on Debian: it installs wrk, haproxy and nginx-light with apt
# when they are missing, builds mxgate (`cargo build --profile dist`;
# `release` for --smoke), starts every process it needs on 127.0.0.0/8 and
# stops all of them on exit.
#
# Backend: one nginx (1 worker) answering GET / with a fixed 612-byte page
# from memory (`return 200`), on 127.0.8.11. Contenders, each on its own
# address, same port (BENCH_PORT):
#   direct   127.0.8.11  the backend itself
#   mxgate   127.0.8.12  dist build, [[http]] listener, one member = the backend
#   haproxy  127.0.8.13  mode http, nbthread 2, keep-alive to the backend
#   nginx    127.0.8.14  2 workers, proxy_pass to an upstream with keepalive 64,
#                         HTTP/1.1 to the backend
# All proxies keep connections to the backend alive and add the same
# forwarding headers, the ones SPEC 6 has mxgate add: X-Forwarded-For,
# X-Forwarded-Proto, X-Forwarded-Host, Forwarded and Via (HAProxy and nginx
# by configuration), so each does the same work and the backend parses the
# same request; none writes an access log (mxgate: [log] level = "warn").
#
# Load: wrk -t THREADS -c C -d DURATION, keep-alive, for each C in
# CONNECTIONS (two load levels: few and many clients). Each cell is the
# median of ROUNDS runs; every round runs every contender once per level, in
# an order rotated by one each round. "front CPU s" is the user+system CPU the
# front's processes used during the run (median).
#
# Environment (all optional):
#   ROUNDS (5; smoke 1)  DURATION (10s; smoke 2s)  CONNECTIONS ("8 64"; smoke 8)
#   THREADS (2)  CONTENDERS ("direct mxgate haproxy nginx")
#   BENCH_PORT (2800; smoke: by PID)  BENCH_OUT (target/http-compare):
#   results.tsv and table.txt are kept there.  BENCH_NO_INSTALL=1: never call apt-get
#   MXGATE_PROFILE (dist; smoke: release): the cargo profile mxgate is built with
#   MXGATE_BIN: this mxgate binary instead of building one
set -euo pipefail
export LC_ALL=C

cd "$(dirname "$0")/.."
root=$(pwd)

smoke=0
for arg in "$@"; do
  case $arg in
    --smoke) smoke=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "http-compare: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

if [ "$smoke" = 1 ]; then
  ROUNDS=${ROUNDS:-1}
  DURATION=${DURATION:-2s}
  CONNECTIONS=${CONNECTIONS:-8}
  BENCH_PORT=${BENCH_PORT:-$((5000 + $$ % 2000))}
fi
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-"8 64"}
THREADS=${THREADS:-2}
BENCH_PORT=${BENCH_PORT:-2800}
CONTENDERS=${CONTENDERS:-"direct mxgate haproxy nginx"}
BENCH_OUT=${BENCH_OUT:-$root/target/http-compare}

BENCH_NAME=http-compare
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"

# ---------------------------------------------------------------- install
have_all() {
  command -v wrk >/dev/null && command -v haproxy >/dev/null &&
    command -v nginx >/dev/null && command -v curl >/dev/null && command -v ss >/dev/null
}
if ! have_all; then
  [ "${BENCH_NO_INSTALL:-0}" = 1 ] && die "tools missing and BENCH_NO_INSTALL=1"
  command -v apt-get >/dev/null || die "tools missing and no apt-get"
  [ "$(id -u)" = 0 ] || die "run as root (apt-get install)"
  log "installing wrk haproxy nginx-light curl with apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps the packages from starting their system services.
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
  fi
  apt_status=0
  apt-get install -y -qq --no-install-recommends \
    wrk haproxy nginx-light curl iproute2 procps >/dev/null || apt_status=$?
  if [ "$made_policy" = 1 ]; then rm -f "$policy"; fi
  [ "$apt_status" = 0 ] || die "apt-get install failed ($apt_status)"
  have_all || die "tools still missing after apt-get install"
fi
[ "$(id -u)" = 0 ] || die "run as root (nginx workers)"

# ---------------------------------------------------------------- build
mxgate_bin=$(build_mxgate "$smoke")

# ---------------------------------------------------------------- processes
work=$(mktemp -d /tmp/http-compare.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  local status=$?
  stop_started
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip_backend=127.0.8.11 ip_mxgate=127.0.8.12 ip_haproxy=127.0.8.13 ip_nginx=127.0.8.14
port=$BENCH_PORT
for a in $ip_backend $ip_mxgate $ip_haproxy $ip_nginx; do
  if ss -Hltn "src $a:$port" 2>/dev/null | grep -q .; then
    die "$a:$port is already in use (another benchmark?); set BENCH_PORT"
  fi
done
declare -A addr=(
  [direct]=$ip_backend:$port [mxgate]=$ip_mxgate:$port
  [haproxy]=$ip_haproxy:$port [nginx]=$ip_nginx:$port
)

start_nginx() { # DIR -> pid in $started
  nginx -t -q -c "$1/nginx.conf" -p "$1" -e "$1/logs/error.log"
  nginx -c "$1/nginx.conf" -p "$1" -e "$1/logs/error.log" >"$1.log" 2>&1 &
  started=$!
  pids+=("$started")
}

log "starting the backend (nginx) on $ip_backend:$port"
backend_conf "$work/backend" "$ip_backend:$port"
start_nginx "$work/backend"
backend_pid=$started
wait_listen "$ip_backend:$port" "$backend_pid"

gina_mxgate_conf "$work/mxgate" bench "$ip_mxgate:$port" "$ip_backend:$port"
"$mxgate_bin" check-config -c "$work/mxgate/mxgate.toml" >/dev/null
"$mxgate_bin" serve -c "$work/mxgate/mxgate.toml" >"$work/mxgate.log" 2>&1 &
mxgate_pid=$!
pids+=("$mxgate_pid")

gina_haproxy_conf "$work/haproxy.cfg" "$ip_haproxy:$port" "$ip_backend:$port"
haproxy -c -q -f "$work/haproxy.cfg"
haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
haproxy_pid=$!
pids+=("$haproxy_pid")

nginx_conf "$work/proxy" 2 "    upstream portal {
        server $ip_backend:$port;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen $ip_nginx:$port backlog=4096;
        location / {
            proxy_pass http://portal;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
            proxy_set_header Forwarded \"for=\$remote_addr;host=\\\"\$http_host\\\";proto=\$scheme\";
            proxy_set_header Via \"1.1 nginx\";
        }
    }"
start_nginx "$work/proxy"
nginx_pid=$started

wait_listen "$ip_mxgate:$port" "$mxgate_pid"
wait_listen "$ip_haproxy:$port" "$haproxy_pid"
wait_listen "$ip_nginx:$port" "$nginx_pid"

# ---------------------------------------------------------------- runs
# cpu_ticks PID...: user + system clock ticks of these processes so far.
hz=$(getconf CLK_TCK)
front_pids() {
  case $1 in
    direct) ;;
    mxgate) echo "$mxgate_pid" ;;
    haproxy) echo "$haproxy_pid" ;;
    nginx) echo "$nginx_pid" $(pgrep -P "$nginx_pid" || true) ;;
  esac
}

# run_one CONTENDER CONNECTIONS -> "requests_per_s latency_avg front_cpu_seconds" or "FAIL - -"
run_one() {
  local c0 c1 pids out rps lat errors
  read -r -a pids <<<"$(front_pids "$1")"
  c0=$(cpu_ticks "${pids[@]}")
  if out=$(timeout 300 wrk -t "$THREADS" -c "$2" -d "$DURATION" "http://${addr[$1]}/" 2>&1); then
    c1=$(cpu_ticks "${pids[@]}")
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    # wrk prints 280.22us, 1.51ms or 1.02s: in ms.
    lat=$(awk '$1 == "Latency" { v = $2; m = 1
      if (v ~ /us$/) m = 0.001; else if (v ~ /ms$/) m = 1; else if (v ~ /s$/) m = 1000
      sub(/[a-z]+$/, "", v); printf "%.3f", v * m }' <<<"$out")
    errors=$(awk '/Non-2xx or 3xx responses:|Socket errors:/' <<<"$out")
    if [ -z "$rps" ] || [ -n "$errors" ]; then
      log "wrk against $1 reported errors: $(tr '\n' ' ' <<<"$out")"
      echo "FAIL - -"
      return
    fi
    awk -v r="$rps" -v l="$lat" -v c="$((c1 - c0))" -v hz="$hz" -v n="${#pids[@]}" \
      'BEGIN { printf "%.0f %s %s\n", r, l, n ? sprintf("%.2f", c / hz) : "-" }'
  else
    log "wrk failed against $1: $(tr '\n' ' ' <<<"$out")"
    echo "FAIL - -"
  fi
}

read -r -a contenders <<<"$CONTENDERS"
for c in "${contenders[@]}"; do
  [ -n "${addr[$c]:-}" ] || die "unknown contender $c"
done

# Every contender answers with the backend's page before timing anything.
for c in "${contenders[@]}"; do
  body=$(curl -sS --max-time 10 "http://${addr[$c]}/") || die "contender $c does not answer"
  [ "$body" = "$gina_page" ] || die "contender $c answers something else: ${body:0:200}"
done

mkdir -p "$BENCH_OUT"
results=$BENCH_OUT/results.tsv
printf 'round\tcontender\trequests_per_s\tlatency_avg\tfront_cpu_seconds\tconnections\n' >"$results"
{
  echo "# http-compare $(date -u +%Y-%m-%dT%H:%M:%SZ) mxgate ${MXGATE_BIN:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')}"
  echo "# $(nproc) CPUs, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# $(haproxy -v | head -n1); $(nginx -v 2>&1); $(wrk --version 2>&1 | head -n1 | cut -d' ' -f1-2)"
  echo "# wrk -t $THREADS -c ($CONNECTIONS) -d $DURATION, $ROUNDS round(s)"
} >"$BENCH_OUT/table.txt"

log "ROUNDS=$ROUNDS DURATION=$DURATION CONNECTIONS=$CONNECTIONS contenders: ${contenders[*]}"
n=${#contenders[@]}
failed=0
read -r -a levels <<<"$CONNECTIONS"
for round in $(seq "$ROUNDS"); do
  for conns in "${levels[@]}"; do
    for i in $(seq 0 $((n - 1))); do
      c=${contenders[$(((i + round - 1) % n))]}
      read -r rps lat cpu <<<"$(run_one "$c" "$conns")"
      [ "$rps" = FAIL ] && failed=$((failed + 1))
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$c" "$rps" "$lat" "$cpu" "$conns" >>"$results"
      log "round $round/$ROUNDS, $conns connections: $c $rps req/s (latency avg ${lat} ms, front CPU ${cpu}s)"
    done
  done
done

# ---------------------------------------------------------------- table
# median CONTENDER COLUMN CONNECTIONS: of the successful runs, or -
median() {
  awk -F'\t' -v c="$1" -v col="$2" -v k="$3" '$2 == c && $6 == k && $3 != "FAIL" && $col != "-" { print $col }' "$results" |
    median_of "%.2f"
}
table() {
  local c runs conns
  printf '%-6s %-8s %14s %11s %10s %16s %12s %5s\n' conns contender "median req/s" "vs haproxy" "vs direct" "latency avg ms" "front CPU s" runs
  for conns in "${levels[@]}"; do
    declare -A med=()
    for c in "${contenders[@]}"; do
      med[$c]=$(median "$c" 3 "$conns")
    done
    for c in "${contenders[@]}"; do
      runs=$(awk -F'\t' -v c="$c" -v k="$conns" '$2 == c && $6 == k && $3 != "FAIL"' "$results" | wc -l)
      awk -v k="$conns" -v c="$c" -v m="${med[$c]}" -v h="${med[haproxy]:-}" -v d="${med[direct]:-}" \
        -v lat="$(median "$c" 4 "$conns")" -v cpu="$(median "$c" 5 "$conns")" -v runs="$runs/$ROUNDS" '
        function ratio(x, y) { return (x == "-" || y == "" || y == "-" || y == 0) ? "-" : sprintf("%.2fx", x / y) }
        BEGIN { printf "%-6s %-8s %14s %11s %10s %16s %12s %5s\n", k, c, m == "-" ? "-" : sprintf("%.0f", m), ratio(m, h), ratio(m, d), lat, cpu, runs }'
    done
    unset med
  done
}
table | tee -a "$BENCH_OUT/table.txt"
if [ "$smoke" = 1 ]; then
  echo "smoke run: GINA requests/s of $CONTENDERS with wrk, 1 round of $DURATION; it checks only that this script works, its numbers measure nothing (docs/performance.md has the real runs)"
fi
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$BENCH_OUT/table.txt"
log "results in $BENCH_OUT (results.tsv, table.txt)"
[ "$failed" = 0 ] || die "$failed wrk run(s) failed"
