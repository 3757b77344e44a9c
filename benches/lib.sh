# Shared by benches/smtp-compare.sh and benches/http-compare.sh (sourced):
# logging, waiting for a listener, the CPU time of processes, medians, and
# stopping every process a script started. The sourcing script sets
# BENCH_NAME, the array `pids` and the directory `work` first.

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
    echo "$MXGATE_BIN"
    return
  fi
  local profile=${MXGATE_PROFILE:-}
  [ -n "$profile" ] || { [ "$1" = 1 ] && profile=release || profile=dist; }
  log "cargo build --profile $profile"
  cargo build --profile "$profile" --quiet --bin mxgate >&2 || die "cargo build --profile $profile failed"
  [ -x "$root/target/$profile/mxgate" ] || die "no target/$profile/mxgate after cargo build"
  echo "$root/target/$profile/mxgate"
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

# wait_listen ADDR:PORT PID: until something listens there (10 s), or PID exited.
wait_listen() {
  local i
  for i in $(seq 100); do
    ss -Hltn "src $1" 2>/dev/null | grep -q . && return 0
    kill -0 "$2" 2>/dev/null || die "process $2 for $1 exited; see $work"
    sleep 0.1
  done
  die "nothing listens on $1 after 10 s"
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
