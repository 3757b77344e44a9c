#!/usr/bin/env bash
# The Raft control plane on a three-backend cluster: how long a SIGKILLed
# master takes to be replaced, and how long one change takes to commit.
# Three `mxgate serve` processes on CLUSTER_NET.1-3 (127.71.0.1-3), nothing
# off loopback, no root needed.
#
#   benches/cluster-failover.sh            # 10 failovers, 200 changes, 200 baseline calls (about 1.5 minutes)
#   benches/cluster-failover.sh --smoke    # 1 failover, 10 changes, 10 baseline calls (about 10 s)
#
# 1. Failover, FAILOVERS rounds: the master named by `cluster status --json`
#    is SIGKILLed; the two survivors' `cluster status --json` is polled every
#    POLL_MS until both name the same master that is not the killed one. A
#    sample is the time from just before the kill to the end of that poll
#    (so it is late by at most one poll period plus one poll, about 30 ms).
#    The killed node is restarted with the same configuration and the next
#    round waits until the master shows all 3 members in state A with
#    local_entries == remote_entries.
# 2. Commit latency: CHANGES `cluster policy apply` on the master, each a
#    distinct policy text; a sample is the wall time of the whole CLI
#    invocation: process start, admin socket, the commit on a majority, the
#    answer. Interleaved with BASELINE `cluster policy show` on the same node
#    (no change; the same process start and admin-socket round trip): the
#    CLI overhead the commit figures include.
#
# Output: the samples as they come (stderr), then the summary on stdout,
# `key=value` lines (`#` lines are notes), also written to
# $BENCH_OUT/cluster-failover.txt when BENCH_OUT is set:
#   failover_ms median=... max=... samples=...
#   commit_ms p50=... p99=... max=... n=...     (p99: nearest rank)
#   cli_baseline_ms p50=... n=...
#   anomalies=N total_s=...
# Anomalies, each reported with the nodes' log lines around it: an election
# slower than SLOW_ELECTION_S (15 s, the issue's bound) or none within
# ELECTION_LIMIT_S, a failed apply or show on a healthy cluster. The script
# then exits 1 after the summary and keeps the node logs in LOG_DIR.
#
# Environment (all optional):
#   FAILOVERS (10; smoke 1)  CHANGES (200; smoke 10)  BASELINE (CHANGES)
#   POLL_MS (100)  ELECTION_LIMIT_S (30)  SLOW_ELECTION_S (15)
#   SYNC_LIMIT_S (60: forming, catching up after a restart)
#   CLI_TIMEOUT_S (10: every untimed CLI call runs under timeout(1))
#   RUN_LIMIT_S (1800; smoke 120: the whole run, then it is stopped)
#   CLUSTER_NET (127.71.0)  CLUSTER_PORT (7025)
#   MXGATE_BIN: this binary instead of building target/release/mxgate
#   BENCH_OUT: a directory for cluster-failover.txt
#   LOG_DIR (BENCH_OUT or target, /cluster-failover-logs): node logs kept
#     there after a failure or anomaly, or always with KEEP_LOGS=1
# Needs jq and ss (iproute2).
set -euo pipefail
export LC_ALL=C # EPOCHREALTIME with a '.'

cd "$(dirname "$0")/.."
root=$(pwd)
started_at=$EPOCHREALTIME

smoke=0
for arg in "$@"; do
  case $arg in
    --smoke) smoke=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "cluster-failover: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

if [ "$smoke" = 1 ]; then
  FAILOVERS=${FAILOVERS:-1}
  CHANGES=${CHANGES:-10}
  RUN_LIMIT_S=${RUN_LIMIT_S:-120}
fi
FAILOVERS=${FAILOVERS:-10}
CHANGES=${CHANGES:-200}
BASELINE=${BASELINE:-$CHANGES}
RUN_LIMIT_S=${RUN_LIMIT_S:-1800}
POLL_MS=${POLL_MS:-100}
ELECTION_LIMIT_S=${ELECTION_LIMIT_S:-30}
SLOW_ELECTION_S=${SLOW_ELECTION_S:-15}
SYNC_LIMIT_S=${SYNC_LIMIT_S:-60}
CLI_TIMEOUT_S=${CLI_TIMEOUT_S:-10}
CLUSTER_NET=${CLUSTER_NET:-127.71.0}
CLUSTER_PORT=${CLUSTER_PORT:-7025}
LOG_DIR=${LOG_DIR:-${BENCH_OUT:-$root/target}/cluster-failover-logs}
for v in FAILOVERS CHANGES BASELINE RUN_LIMIT_S POLL_MS ELECTION_LIMIT_S SLOW_ELECTION_S SYNC_LIMIT_S CLI_TIMEOUT_S CLUSTER_PORT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "cluster-failover: $v must be a whole number" >&2; exit 2; }
done
[ "$FAILOVERS" -ge 1 ] && [ "$CHANGES" -ge 1 ] && [ "$POLL_MS" -ge 1 ] ||
  { echo "cluster-failover: FAILOVERS, CHANGES and POLL_MS must be at least 1" >&2; exit 2; }

BENCH_NAME=cluster-failover
# shellcheck source=benches/lib.sh
. "$root/benches/lib.sh"

for tool in jq ss timeout; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install jq iproute2 coreutils)"
done

# ---------------------------------------------------------------- build
if [ -n "${MXGATE_BIN:-}" ]; then
  [ -x "$MXGATE_BIN" ] || die "MXGATE_BIN=$MXGATE_BIN is not an executable"
  bin=$(realpath "$MXGATE_BIN")
else
  log "cargo build --release"
  cargo build --release --quiet --bin mxgate >&2 || die "cargo build --release failed"
  bin=${CARGO_TARGET_DIR:-$root/target}/release/mxgate
  [ -x "$bin" ] || die "no $bin after cargo build"
fi

# ---------------------------------------------------------------- processes
work=$(mktemp -d /tmp/cluster-failover.XXXXXX)
pids=()
declare -a node_pid cfg addr
watchdog="" timed_pid="" anomalies=0 keep_logs=${KEEP_LOGS:-0}

# stop_nodes: SIGTERM to every started node, SIGKILL to those still there
# after 10 s (bounded, unlike lib.sh's stop_started; the nodes are disowned,
# so the shell reaps them without `wait`).
stop_nodes() {
  local pid i alive
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for i in $(seq 100); do
    alive=0
    for pid in "${pids[@]}"; do
      if kill -0 "$pid" 2>/dev/null; then alive=1; fi
    done
    [ "$alive" = 1 ] || return 0
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$watchdog" ]; then kill "$watchdog" 2>/dev/null || true; wait "$watchdog" 2>/dev/null || true; fi
  if [ -n "$timed_pid" ]; then kill -9 "$timed_pid" 2>/dev/null || true; fi
  stop_nodes
  if [ "$status" != 0 ] || [ "$keep_logs" = 1 ]; then
    if mkdir -p "$LOG_DIR" 2>/dev/null; then
      local i
      for i in 1 2 3; do
        [ -e "$work/n$i/node.log" ] && cp "$work/n$i/node.log" "$LOG_DIR/gw$i.log"
      done
      [ -e "$work/anomalies.txt" ] && cp "$work/anomalies.txt" "$LOG_DIR/anomalies.txt"
      log "node logs kept in $LOG_DIR"
    fi
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The whole run is bounded: after RUN_LIMIT_S the script is sent SIGTERM
# (the timed CLI calls run in the background and are waited for, so the
# trap runs at once; every other call is under timeout(1)).
(
  trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
  sleep "$RUN_LIMIT_S" &
  sleeper=$!
  wait "$sleeper"
  echo "[$BENCH_NAME] error: run limit RUN_LIMIT_S=$RUN_LIMIT_S exceeded, stopping" >&2
  kill -TERM $$
) &
watchdog=$!

# now_us: microseconds since the epoch, without a fork.
now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }
# iso US: the UTC time of US (microseconds) as the node logs print it.
iso() { date -u -d "@${1:0:-6}.${1: -6}" +%Y-%m-%dT%H:%M:%S.%6N; }
# ms US [DECIMALS]: microseconds as milliseconds.
ms() { awk -v u="$1" -v d="${2:-1}" 'BEGIN { printf "%.*f", d, u / 1000 }'; }

# cli ARGS...: an untimed CLI call, bounded by CLI_TIMEOUT_S.
cli() { timeout "$CLI_TIMEOUT_S" "$bin" "$@"; }
# status_of I: node I's `cluster status --json`, or nothing when it does not answer.
status_of() { cli cluster status --json -c "${cfg[$1]}" 2>/dev/null || true; }
# master_of I: the master node I names, or nothing.
master_of() { status_of "$1" | jq -r '.master // empty' 2>/dev/null || true; }

# logs_between FROM_US TO_US: every node's log lines in that window (health
# check lines, as the [local] MTA is deliberately absent, and the retries
# towards a dead node left out), at most 200 a node; the whole logs are kept.
logs_between() {
  local from to i
  from=$(iso "$1") to=$(iso "$2")
  for i in 1 2 3; do
    echo "--- gw$i log, $from .. $to (UTC)"
    awk -v from="$from" -v to="$to" -v max=200 '
      substr($0, 1, 26) < from || substr($0, 1, 26) > to { next }
      /mxgate::health|openraft::replication|replication_handler: update progress error/ { next }
      ++n <= max' "$work/n$i/node.log"
  done
}

# anomaly FROM_US TO_US TEXT: records TEXT and the log lines around it.
anomaly() {
  anomalies=$((anomalies + 1))
  keep_logs=1
  {
    echo "=== anomaly $anomalies: $3"
    logs_between "$(($1 - 2000000))" "$(($2 + 1000000))"
  } >>"$work/anomalies.txt"
  log "ANOMALY: $3 (log lines: see the end of the output)"
}

# start_node I: `mxgate serve` for node I, its output appended to its log;
# waits (bounded) until its admin socket answers.
start_node() {
  local i=$1 n
  "$bin" serve -c "${cfg[$i]}" >>"$work/n$i/node.log" 2>&1 &
  node_pid[$i]=$!
  pids+=("$!")
  # No "Killed" job notice for the SIGKILLed master; it is still reaped.
  disown "$!"
  for n in $(seq 200); do
    cli status --json -c "${cfg[$i]}" >/dev/null 2>&1 && return 0
    kill -0 "${node_pid[$i]}" 2>/dev/null || die "gw$i exited at start; its log: $(tail -n 20 "$work/n$i/node.log")"
    sleep 0.1
  done
  die "gw$i's admin socket does not answer after 20 s"
}

# wait_in_sync: until a node that is the master shows 3 members, all in
# state A with local_entries == remote_entries (bounded by SYNC_LIMIT_S);
# sets `master` (its name) and `mi` (its index).
wait_in_sync() {
  local deadline i name
  deadline=$(($(now_us) + SYNC_LIMIT_S * 1000000))
  while [ "$(now_us)" -lt "$deadline" ]; do
    for i in 1 2 3; do
      name=$(status_of "$i" | jq -r 'select(.master == .node and (.members | length) == 3
        and all(.members[]; .state == "A" and .local_entries == .remote_entries)) | .master' 2>/dev/null || true)
      if [ -n "$name" ]; then
        master=$name mi=${name#gw}
        [[ $mi =~ ^[123]$ ]] || die "unexpected master name $name"
        return 0
      fi
    done
    sleep 0.1
  done
  for i in 1 2 3; do
    log "gw$i: $(status_of "$i" | jq -c '{master, epoch, members: [.members[] | [.name, .state, .local_entries, .remote_entries]]}' 2>/dev/null || echo 'no answer')"
  done
  die "the cluster is not in sync after $SYNC_LIMIT_S s"
}

# ---------------------------------------------------------------- the cluster
for i in 1 2 3; do
  addr[i]=$CLUSTER_NET.$i:$CLUSTER_PORT
  if ss -Hltn "src ${addr[i]}" 2>/dev/null | grep -q .; then die "something already listens on ${addr[i]}"; fi
  mkdir -p "$work/n$i"
  : >"$work/n$i/cluster.toml"
  cfg[i]=$work/n$i/mxgate.toml
  cat >"${cfg[i]}" <<EOF
[node]
name = "gw$i"
data_dir = "$work/n$i/data"
policy = "$work/n$i/cluster.toml"
drain_timeout = "1s"

[[smtp]]
name = "inbound"
listen = "$CLUSTER_NET.$i:0"
hostname = "mx.test"

[local]
smtp_upstream = "127.0.0.1:2525"   # nothing there: only the control plane is measured

[cluster]
listen = "${addr[i]}"
advertise = "${addr[i]}"
EOF
done

version=$("$bin" --version)
log "$version; 3 backends on $CLUSTER_NET.1-3:$CLUSTER_PORT; work directory $work"
for i in 1 2 3; do start_node "$i"; done
cli cluster create -c "${cfg[1]}" >/dev/null || die "cluster create failed"
cli cluster identifier export --out "$work/id.txt" --insecure-no-password -c "${cfg[1]}" >/dev/null ||
  die "cluster identifier export failed"
for i in 2 3; do
  cli cluster join --identifier "$work/id.txt" --master "${addr[1]}" -c "${cfg[i]}" >/dev/null ||
    die "gw$i: cluster join failed"
done
wait_in_sync
log "cluster formed, master $master"

# ---------------------------------------------------------------- 1. failover
failover_us=()
for round in $(seq "$FAILOVERS"); do
  killed=$master ki=$mi
  survivors=()
  for i in 1 2 3; do [ "$i" = "$ki" ] || survivors+=("$i"); done
  a=${survivors[0]} b=${survivors[1]}
  epoch=$(status_of "$a" | jq -r '.epoch // "?"' 2>/dev/null || echo '?')

  t0=$(now_us)
  kill -9 "${node_pid[$ki]}"
  limit=$((t0 + ELECTION_LIMIT_S * 1000000))
  next=$t0 elected="" polls=0
  while :; do
    ma=$(master_of "$a")
    mb=$(master_of "$b")
    t1=$(now_us)
    polls=$((polls + 1))
    if [ -n "$ma" ] && [ "$ma" = "$mb" ] && [ "$ma" != "$killed" ]; then
      elected=$ma
      break
    fi
    [ "$t1" -lt "$limit" ] || break
    next=$((next + POLL_MS * 1000))
    if [ "$next" -gt "$t1" ]; then
      sleep "$(awk -v u=$((next - t1)) 'BEGIN { printf "%.6f", u / 1e6 }')"
    else
      next=$t1
    fi
  done
  took=$((t1 - t0))

  if [ -z "$elected" ]; then
    anomaly "$t0" "$t1" "round $round: no new master within $ELECTION_LIMIT_S s after SIGKILL of $killed (gw$a names '${ma:-none}', gw$b names '${mb:-none}')"
    cat "$work/anomalies.txt" >&2
    die "no new master after $ELECTION_LIMIT_S s"
  fi
  failover_us+=("$took")
  new_epoch=$(status_of "$a" | jq -r '.epoch // "?"' 2>/dev/null || echo '?')
  log "failover $round/$FAILOVERS: SIGKILL of $killed (epoch $epoch) at $(iso "$t0")Z -> $elected (epoch $new_epoch) after $(ms "$took" 0) ms ($polls polls)"
  if [ "$took" -gt $((SLOW_ELECTION_S * 1000000)) ]; then
    anomaly "$t0" "$t1" "round $round: the election after SIGKILL of $killed took $(ms "$took" 0) ms (more than $SLOW_ELECTION_S s)"
  fi

  # Back with the same configuration; the next round starts when all 3 are A.
  start_node "$ki"
  wait_in_sync
  log "$killed is back, all 3 in state A again $(ms $(($(now_us) - t1)) 0) ms after the election was seen"
done

# ---------------------------------------------------------------- 2. commits
mkdir -p "$work/changes"
for i in $(seq "$CHANGES"); do
  printf '# cluster-failover change %d of %d\n[routing]\nmax_attempts = %d\n' "$i" "$CHANGES" $((i % 10 + 1)) >"$work/changes/p$i.toml"
done
log "$CHANGES changes with \`cluster policy apply\` on $master, interleaved with $BASELINE \`cluster policy show\`"

# timed OUTPUT ARGS...: runs `mxgate ARGS` in the background and waits for
# it (so the run limit can interrupt the wait); sets `rc` and `took` (us).
timed() {
  local out=$1 s e
  shift
  s=$(now_us)
  "$bin" "$@" >"$out.out" 2>"$out.err" &
  timed_pid=$!
  if wait "$timed_pid"; then rc=0; else rc=$?; fi
  e=$(now_us)
  timed_pid=""
  took=$((e - s)) t_start=$s t_end=$e
}

commit_us=() baseline_us=()
total=$((CHANGES > BASELINE ? CHANGES : BASELINE))
for i in $(seq "$total"); do
  if [ "$i" -le "$CHANGES" ]; then
    timed "$work/apply" cluster policy apply "$work/changes/p$i.toml" -c "${cfg[$mi]}"
    if [ "$rc" = 0 ] && grep -q 'applied and replicated' "$work/apply.out"; then
      commit_us+=("$took")
    else
      anomaly "$t_start" "$t_end" "change $i: \`cluster policy apply\` on $master failed (exit $rc, $(ms "$took") ms) on a healthy cluster: $(cat "$work/apply.out" "$work/apply.err")"
    fi
  fi
  if [ "$i" -le "$BASELINE" ]; then
    timed "$work/show" cluster policy show -c "${cfg[$mi]}"
    if [ "$rc" = 0 ]; then
      baseline_us+=("$took")
    else
      anomaly "$t_start" "$t_end" "\`cluster policy show\` on $master failed (exit $rc): $(cat "$work/show.err")"
    fi
  fi
  if [ $((i % 50)) = 0 ]; then log "$i of $total"; fi
done

# Every backend ends with the last change (bounded).
want="# cluster-failover change $CHANGES of $CHANGES"
for i in 1 2 3; do
  ok=0
  for n in $(seq 100); do
    if cli cluster policy show -c "${cfg[i]}" 2>/dev/null | grep -qxF "$want"; then ok=1; break; fi
    sleep 0.1
  done
  if [ "$ok" = 0 ]; then
    e=$(now_us)
    anomaly "$((e - 10000000))" "$e" "gw$i does not hold the last change 10 s after it was committed"
  fi
done

# ---------------------------------------------------------------- summary
# stats_us: "p50=... p99=... max=... n=..." (ms) of the microseconds on stdin;
# p50 is the median, p99 the nearest rank (ceil(0.99 n)-th smallest).
stats_us() {
  sort -n | awk 'NF { v[++n] = $1 / 1000 } END {
    if (n == 0) { print "p50=- p99=- max=- n=0"; exit }
    p50 = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    r = int(0.99 * n); if (r < 0.99 * n) r++
    printf "p50=%.1f p99=%.1f max=%.1f n=%d\n", p50, v[r], v[n], n }'
}
failover_ms=()
for u in "${failover_us[@]}"; do failover_ms+=("$(ms "$u" 0)"); done
f_median=$(printf '%s\n' "${failover_ms[@]}" | median_of '%.0f')
f_max=$(printf '%s\n' "${failover_ms[@]}" | sort -n | tail -n 1)
f_samples=$(IFS=,; echo "${failover_ms[*]}")
commit=$(printf '%s\n' "${commit_us[@]}" | stats_us)
baseline=$(printf '%s\n' "${baseline_us[@]}" | stats_us)
total_s=$(awk -v u=$(($(now_us) - ${started_at/./})) 'BEGIN { printf "%.0f", u / 1e6 }')

summary=$(
  cat <<EOF
# cluster-failover: $version, 3 backends on $CLUSTER_NET.1-3 (loopback), $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%M:%SZ)$([ "$smoke" = 1 ] && echo ', smoke run')
# failover_ms: SIGKILL of the master until both survivors name one new master (status polled every $POLL_MS ms)
failover_ms median=$f_median max=$f_max samples=$f_samples
# commit_ms: wall time of one \`mxgate cluster policy apply\` on the master, CLI process start included
commit_ms ${commit}
# cli_baseline_ms: \`mxgate cluster policy show\` on the same node: CLI process start and admin-socket round trip
cli_baseline_ms ${baseline}
anomalies=$anomalies total_s=$total_s
EOF
)
echo "$summary"
if [ -n "${BENCH_OUT:-}" ]; then
  mkdir -p "$BENCH_OUT"
  echo "$summary" >"$BENCH_OUT/cluster-failover.txt"
  log "summary written to $BENCH_OUT/cluster-failover.txt"
fi
if [ "$anomalies" != 0 ]; then
  cat "$work/anomalies.txt" >&2
  exit 1
fi
