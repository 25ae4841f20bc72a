# Shared by bench/http.sh, bench/scale.sh and bench/gateway.sh (sourced).
# Everything runs under one temporary directory ($WORK) removed on exit,
# with every process this script started stopped by its pid.

set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d /tmp/keygate-bench.XXXXXX)
BIN=$WORK/bin
PIDS=()
DUR=${DUR:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
# PIN=1: wrk on CPU 0, the server(s) on CPU 1 (taskset); PIN=0: unpinned.
PIN=${PIN:-1}
GATEWAY_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export KEYGATE_GATEWAY_SECRET=$GATEWAY_SECRET

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s\n' "$*" >&2; }

need_wrk() {
  if ! command -v wrk >/dev/null; then
    log "installing wrk (Debian package)"
    if [ "$(id -u)" = 0 ]; then apt-get install -y wrk >/dev/null || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
    else sudo apt-get install -y wrk >/dev/null; fi
  fi
}

# server_cpu / client_cpu: taskset prefixes.
server_cpu() { if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then echo "taskset -c 1"; fi; }
client_cpu() { if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then echo "taskset -c 0"; fi; }

build() { (cd "$ROOT" && go build -o "$BIN/" "$@"); }

machine() {
  log "machine: nproc=$(nproc) cpu=\"$(lscpu | sed -n 's/^Model name: *//p' | head -1)\" load=\"$(uptime | sed 's/.*load average: //')\" commit=$(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet HEAD -- . 2>/dev/null || echo +dirty)"
  log "settings: wrk -t$THREADS -c$CONNS -d$DUR --latency; pinned=$([ -n "$(server_cpu)" ] && echo 'yes (wrk CPU 0, server CPU 1)' || echo no)"
}

# keygen N NAME: a store of N keys at $WORK/NAME.db, secrets at $WORK/NAME.txt.
keygen() {
  "$BIN/keygen" -n "$1" -db "$WORK/$2.db" -secrets "$WORK/$2.txt"
}

# addr_from_log FILE: the first listening address a server logged.
addr_from_log() {
  local f=$1 a=""
  for _ in $(seq 200); do
    a=$(grep -o '"addr":"[^"]*"' "$f" 2>/dev/null | head -1 | cut -d'"' -f4 || true)
    [ -z "$a" ] && a=$(grep -o 'listening on [0-9.:]*' "$f" 2>/dev/null | head -1 | awk '{print $3}' || true)
    [ -n "$a" ] && { echo "$a"; return; }
    sleep 0.02
  done
  log "no address in $f:"; cat "$f" >&2; return 1
}

# start_sidecar DB LOG: starts the sidecar (with $SIDECAR_ARGS) on a free loopback port; sets
# SIDECAR_PID, SIDECAR_URL and STARTUP_MS (exec to first 200 of /readyz).
start_sidecar() {
  local db=$1 logf=$2 t0 t1
  : >"$logf" # truncated here, not in the child: addr_from_log must not read an earlier run's address
  t0=$(date +%s%N)
  # shellcheck disable=SC2086 # SIDECAR_ARGS: extra flags, split on spaces
  $(server_cpu) "$BIN/keygate-sidecar" --listen 127.0.0.1:0 --db "$db" ${SIDECAR_ARGS:-} 2>>"$logf" &
  SIDECAR_PID=$!
  PIDS+=("$SIDECAR_PID")
  SIDECAR_URL=http://$(addr_from_log "$logf")
  wait_http "$SIDECAR_PID" "$SIDECAR_URL/readyz" || { cat "$logf" >&2; return 1; }
  t1=$(date +%s%N)
  STARTUP_MS=$(( (t1 - t0) / 1000000 ))
}

# wait_http PID URL [curl args]: until URL answers 200 (30 s at most),
# failing early when the process PID has exited.
wait_http() {
  local pid=$1 url=$2 i
  shift 2
  for i in $(seq 3000); do
    curl -fs -o /dev/null "$@" "$url" && return
    kill -0 "$pid" 2>/dev/null || { log "process $pid exited before $url answered"; return 1; }
    sleep 0.01
  done
  log "$url did not answer in 30 s"; return 1
}

stop_pid() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# verify_once URL SECRETS_FILE: the sidecar's answer to the first key.
verify_once() {
  local key
  key=$(head -1 "$2")
  curl -fsS -X POST "$1/internal/v1/verify" -H "Authorization: Bearer $GATEWAY_SECRET" -H 'Content-Type: application/json' \
    -H 'X-Request-Id: wrk' --data "{\"key\":\"$key\",\"clientIp\":\"10.9.200.1\",\"requiredScopes\":[\"payment:write\"],\"allowedModes\":[\"LIVE\"]}"
}

# cpu_ticks PID: user+system CPU time of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# wrk_cmd LABEL ARGS...: runs wrk (on the client CPU) and sets RPS, P50,
# P99, REQS (requests completed) and WRK_CPU (the share of one CPU wrk
# used: near 100% means wrk, not the server, set the rate).
wrk_cmd() {
  local label=$1 out t0 t1
  shift
  t0=$(date +%s%N)
  out=$( { TIMEFORMAT='%U %S'; time $(client_cpu) wrk -t"$THREADS" -c"$CONNS" -d"$DUR" --latency "$@" 2>&1; } 2>"$WORK/time-$label" )
  t1=$(date +%s%N)
  printf '%s\n' "$out" >"$WORK/wrk-$label.txt"
  if printf '%s\n' "$out" | grep -q 'Non-2xx\|Socket errors'; then
    log "$label: errors:"; printf '%s\n' "$out" | grep 'Non-2xx\|Socket errors' >&2
  fi
  RPS=$(printf '%s\n' "$out" | awk '/^Requests\/sec:/ {print $2}')
  REQS=$(printf '%s\n' "$out" | awk '/requests in/ {print $1}')
  P50=$(printf '%s\n' "$out" | awk '$1=="50%" {print $2}')
  P99=$(printf '%s\n' "$out" | awk '$1=="99%" {print $2}')
  WRK_CPU=$(awk -v ns=$((t1 - t0)) '{printf "%.0f", ($1 + $2) * 1e11 / ns}' "$WORK/time-$label")
}

# run_wrk LABEL URL SECRETS LIMIT [PID...]: one wrk verify run
# (bench/verify.lua); prints the rate, p50/p99, wrk's CPU share and, with
# the server's PIDs, their CPU time per request (SRV_US).
run_wrk() {
  local label=$1 url=$2 secrets=$3 limit=$4 before=0 after=0 p
  shift 4
  for p in "$@"; do before=$((before + $(cpu_ticks "$p"))); done
  KG_SECRETS=$secrets KG_LIMIT=$limit KG_GATEWAY_SECRET=$GATEWAY_SECRET wrk_cmd "$label" -s "$ROOT/bench/verify.lua" "$url"
  for p in "$@"; do after=$((after + $(cpu_ticks "$p"))); done
  report "$label" "$before" "$after"
}

# report LABEL TICKS_BEFORE TICKS_AFTER: prints the last wrk run.
report() {
  SRV_US=""
  if [ "$3" != 0 ]; then
    SRV_US=$(awk -v t=$(( $3 - $2 )) -v hz="$(getconf CLK_TCK)" -v n="$REQS" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
  fi
  printf '%-26s %10s req/s  p50 %-9s p99 %-9s wrk CPU %3s%%%s\n' "$1" "$RPS" "$P50" "$P99" "$WRK_CPU" "${SRV_US:+  server CPU ${SRV_US} µs/req}"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

# rss PID: "VmRSS RssAnon RssFile" in MiB.
rss() {
  awk '/^(VmRSS|RssAnon|RssFile):/ {printf "%s=%.0fMiB ", $1, $2/1024}' "/proc/$1/status"
}
