# Shared by the scripts in benches/ (sourced): logging, building mxgate,
# waiting for a listener, the CPU time of processes, medians, stopping every
# process a script started, and the GINA set-up (backend page, nginx, mxgate
# and HAProxy configurations) of http-compare.sh and http-profile.sh. The
# sourcing script sets BENCH_NAME, `root`, the array `pids` and the
# directory `work` first.

log() { printf '[%s %s] %s\n' "$BENCH_NAME" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# build_mxgate SMOKE: builds mxgate with cargo profile MXGATE_PROFILE and
# prints the binary's path. The default is `dist` (release + fat LTO + one
# codegen unit: the packaged binary, see Cargo.toml) for full runs and
# `release` for smoke runs (CI), which only check that the script works.
# MXGATE_BIN names a binary to use instead (before/after comparisons).
build_mxgate() {
  if [ -n "${MXGATE_BIN:-}" ]; then
    [ -x "$MXGATE_BIN" ] || die "MXGATE_BIN=$MXGATE_BIN is not an executable"
    realpath "$MXGATE_BIN"
    return
  fi
  local profile=${MXGATE_PROFILE:-}
  [ -n "$profile" ] || { [ "$1" = 1 ] && profile=release || profile=dist; }
  log "cargo build --profile $profile"
  cargo build --profile "$profile" --quiet --bin mxgate >&2 || die "cargo build --profile $profile failed"
  [ -x "$root/target/$profile/mxgate" ] || die "no target/$profile/mxgate after cargo build"
  echo "$root/target/$profile/mxgate"
}

# start_work NAME: a private directory in `work` (readable by the
# unprivileged users of smtp-sink and nginx), removed with every started
# process when the script exits; `pids` starts empty.
start_work() {
  work=$(mktemp -d "/tmp/$1.XXXXXX")
  chmod 755 "$work"
  pids=()
  trap 'stop_started; rm -rf "$work"' EXIT
}

# Stops (and reaps) every process in `pids`.
stop_started() {
  local pid
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}

# wait_listen ADDR:PORT [PID]: until something listens there (LISTEN_WAIT
# tenths of a second, 100 by default), or PID exited.
wait_listen() {
  local i
  for i in $(seq "${LISTEN_WAIT:-100}"); do
    ss -Hltn "src $1" 2>/dev/null | grep -q . && return 0
    [ -z "${2:-}" ] || kill -0 "$2" 2>/dev/null || die "process $2 for $1 exited; see $work"
    sleep 0.1
  done
  die "nothing listens on $1 after ${LISTEN_WAIT:-100} tenths of a second"
}

# cpu_ticks PID...: user + system clock ticks the processes used so far.
cpu_ticks() {
  local pid total=0 stat f
  for pid in "$@"; do
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    stat=${stat##*) }   # fields after "(comm) ": state is field 3, utime 14, stime 15
    read -r -a f <<<"$stat"
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}

# median_of FORMAT: the median of the numbers on stdin ("-" when none).
median_of() {
  sort -n | awk -v fmt="$1" '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) printf fmt, v[(NR + 1) / 2]; else printf fmt, (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ---------------------------------------------------------------- GINA set-up

# The backend's fixed 612-byte page.
gina_page=$(printf '<!DOCTYPE html><html><head><title>GINA</title></head><body>%0580d</body></html>' 0)

# nginx_conf DIR WORKERS SERVER-BLOCK: a self-contained nginx configuration.
nginx_conf() {
  mkdir -p "$1/tmp" "$1/logs"
  cat >"$1/nginx.conf" <<EOF
worker_processes $2;
worker_rlimit_nofile 16384;
pid $1/nginx.pid;
error_log $1/logs/error.log warn;
daemon off;
events { worker_connections 8000; }
http {
    access_log off;
    client_body_temp_path $1/tmp;
    proxy_temp_path $1/tmp;
    fastcgi_temp_path $1/tmp;
    uwsgi_temp_path $1/tmp;
    scgi_temp_path $1/tmp;
    keepalive_requests 1000000;
$3
}
EOF
}

# backend_conf DIR ADDR:PORT: the backend, one nginx worker answering GET /
# with $gina_page from memory.
backend_conf() {
  nginx_conf "$1" 1 "    server {
        listen $2 backlog=4096;
        location / {
            default_type text/html;
            return 200 '$gina_page';
        }
    }"
}

# gina_mxgate_conf DIR NAME LISTEN BACKEND: mxgate with one [[http]]
# listener and one member whose gina upstream is BACKEND, logging at warn
# (no access log).
gina_mxgate_conf() {
  mkdir -p "$1"
  cat >"$1/mxgate.toml" <<EOF
[node]
name = "$2"
data_dir = "data"
policy = "cluster.toml"
drain_timeout = "1s"

[[http]]
name = "gina"
listen = "$3"
upstream_timeout = "60s"

[log]
level = "warn"
EOF
  cat >"$1/cluster.toml" <<EOF
[routing]
affinity = "source-destination"

[members.backend]
gina = "$4"
EOF
}

# gina_haproxy_conf FILE LISTEN BACKEND: HAProxy in HTTP mode, keep-alive
# on both sides, `http-reuse always`, no logging, telling the backend what
# mxgate tells it (SPEC 6): `X-Forwarded-For` (`option forwardfor`),
# `X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded` and `Via`, so both
# do the same work and the backend parses the same request.
gina_haproxy_conf() {
  cat >"$1" <<EOF
global
    nbthread 2
    maxconn 8000
    # no logging: the others do not log per request either

defaults
    mode http
    option http-keep-alive
    option forwardfor
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s

frontend gina
    bind $2
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)] if { req.hdr(host) -m found }
    http-request add-header Forwarded "for=%[src];host=\"%[req.hdr(host)]\";proto=http"
    http-request add-header Via "1.1 haproxy"
    default_backend portal

backend portal
    balance source
    server backend $3
EOF
}
