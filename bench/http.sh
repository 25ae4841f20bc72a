#!/usr/bin/env bash
# bench/http.sh (make bench-http): verify over HTTP against a bare fasthttp
# handler, docs/CONTRACT.md §10.5 "≥ 0.8 × the requests/s of a bare fasthttp handler".
#
# Builds keygate-sidecar, bench/keygen and bench/bare; generates a store of
# 10,000 keys (2 scopes, 10-entry CIDR whitelist); starts the sidecar on it
# (TCP loopback) and bench/bare (the sidecar's fasthttp.Server settings, a
# canned answer of the same bytes captured from the sidecar, no work); warms
# the sidecar's cache; then drives both with the same wrk settings and
# bench/verify.lua (a random key of the 10,000 per request, with the gateway
# secret and a client IP checked against the whole whitelist), alternating
# ROUNDS times, and prints each run's rate and p50/p99 and the ratio, and the
# median ratio. It also prints wrk's CPU share (near 100%: wrk, not the
# server, set the rate — then the rate ratio flatters the sidecar) and each
# server's CPU time per request from /proc/PID/stat, whose ratio is the
# cost ratio independent of the load generator.
#
# Environment: DUR (10s), CONNS (64), THREADS (1), ROUNDS (3), KEYS (10000),
# PIN (1: wrk on CPU 0 and the server on CPU 1 with taskset; the server's
# GOMAXPROCS then follows its affinity, 1; PIN=0: both unpinned).
# Everything lives in a temporary directory removed at exit (it holds the
# generated keys' secrets: benchmark credentials only).
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-3}
KEYS=${KEYS:-10000}

need_wrk
build ./cmd/keygate-sidecar ./bench/keygen ./bench/bare
machine
keygen "$KEYS" store >/dev/null 2>&1

start_sidecar "$WORK/store.db" "$WORK/sidecar.log"
verify_once "$SIDECAR_URL" "$WORK/store.txt" >"$WORK/answer.json"
grep -q '"allow":true' "$WORK/answer.json" || { log "sidecar did not allow the first key:"; cat "$WORK/answer.json" >&2; exit 1; }
$(server_cpu) "$BIN/bare" --listen 127.0.0.1:0 --body-file "$WORK/answer.json" 2>"$WORK/bare.log" &
BARE_PID=$!
PIDS+=("$BARE_PID")
BARE_URL=http://$(addr_from_log "$WORK/bare.log")
log "sidecar $SIDECAR_URL (pid $SIDECAR_PID, ready in ${STARTUP_MS} ms) · bare $BARE_URL (pid $BARE_PID) · answer $(wc -c <"$WORK/answer.json") bytes"

DUR=3s run_wrk warm-up "$SIDECAR_URL" "$WORK/store.txt" "$KEYS" >/dev/null

ratios=() cpuratios=()
for r in $(seq "$ROUNDS"); do
  run_wrk "round$r bare" "$BARE_URL" "$WORK/store.txt" "$KEYS" "$BARE_PID"
  bare=$RPS bare_us=$SRV_US
  run_wrk "round$r sidecar" "$SIDECAR_URL" "$WORK/store.txt" "$KEYS" "$SIDECAR_PID"
  ratios+=("$(ratio "$RPS" "$bare")")
  cpuratios+=("$(ratio "$bare_us" "$SRV_US")")
  echo "round$r ratio sidecar/bare: requests/s ${ratios[-1]} (target ≥ 0.8) · server CPU per request bare/sidecar ${cpuratios[-1]}"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "median over $ROUNDS rounds: requests/s ratio $(median "${ratios[@]}") (target ≥ 0.8) · CPU-per-request ratio $(median "${cpuratios[@]}")"
log "sidecar after the runs: $(rss "$SIDECAR_PID")"
