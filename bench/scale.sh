#!/usr/bin/env bash
# bench/scale.sh (make bench-scale): docs/CONTRACT.md §10.5 "1,000,000 stored keys: sidecar
# RSS ≤ 300 MiB, start-up ≤ 2 s, verify figures unchanged".
#
# Generates a store of 1,000,000 keys and one of 10,000 with bench/keygen
# (same key shape: 2 scopes, 10-entry CIDR whitelist), plus 10,000 keys of a
# third, throw-away store that both sidecars have never seen (unknown keys).
# Then:
#   start-up   exec of keygate-sidecar to the first 200 of GET /readyz,
#              STARTS times per store (page cache warm: the files were just
#              written); the worst is printed.
#   verify     both sidecars running side by side; the same wrk load
#              (bench/verify.lua) alternately against each:
#                hit      a random key of the first 10,000 (cached after warm-up)
#                unknown  a well-formed key the store does not have (a bbolt
#                         read every time: the verify "miss")
#                spread   a random key of all of them (1M: mostly cache misses)
#              and the 1M/10k ratio of each.
#   RSS        VmRSS, RssAnon and RssFile (the mmapped bbolt pages) of each
#              sidecar from /proc/PID/status after the hit and unknown loads
#              (a working set of 10,000 keys among 1M, and probes with keys
#              the store does not have), and again after the spread load.
#              The sidecars run with --usage-flush 5s, so lastUsedAt flushes
#              happen during the loads and count.
#   in-process sidecar's BenchmarkVerifyStore (hit, hit-parallel,
#              miss-bbolt, spread) on each store, sidecars stopped.
# Environment: DUR (10s), CONNS (64), THREADS (1), PIN (1), KEYS (1000000),
# STARTS (3), BENCHTIME (2s). Takes about 4 minutes. Everything lives in a
# temporary directory removed at exit (it holds the generated keys' secrets).
source "$(dirname "$0")/lib.sh"
KEYS=${KEYS:-1000000}
STARTS=${STARTS:-3}
BENCHTIME=${BENCHTIME:-2s}

need_wrk
build ./cmd/keygate-sidecar ./bench/keygen
(cd "$ROOT" && go test -c -o "$BIN/sidecar.test" ./sidecar)
machine

t0=$(date +%s%N)
"$BIN/keygen" -n "$KEYS" -db "$WORK/big.db" -secrets "$WORK/big.txt"
echo "keygen $KEYS keys: $(( ($(date +%s%N) - t0) / 1000000 )) ms, db $(( $(stat -c %s "$WORK/big.db") >> 20 )) MiB"
keygen 10000 small 2>/dev/null
keygen 10000 unknown 2>/dev/null

for s in small big; do
  worst=0
  for _ in $(seq "$STARTS"); do
    start_sidecar "$WORK/$s.db" "$WORK/sidecar-$s.log"
    [ "$STARTUP_MS" -gt "$worst" ] && worst=$STARTUP_MS
    stop_pid "$SIDECAR_PID"
  done
  echo "start-up to ready, $s store: worst of $STARTS = ${worst} ms (target ≤ 2000 ms)"
done

export SIDECAR_ARGS="--usage-flush 5s"
start_sidecar "$WORK/small.db" "$WORK/sidecar-small.log"; SMALL_PID=$SIDECAR_PID; SMALL_URL=$SIDECAR_URL
start_sidecar "$WORK/big.db" "$WORK/sidecar-big.log"; BIG_PID=$SIDECAR_PID; BIG_URL=$SIDECAR_URL
echo "idle RSS: 10k $(rss "$SMALL_PID") · 1M $(rss "$BIG_PID")"
for u in "$SMALL_URL" "$BIG_URL"; do
  DUR=3s run_wrk warm-up "$u" "$( [ "$u" = "$SMALL_URL" ] && echo "$WORK/small.txt" || echo "$WORK/big.txt")" 10000 >/dev/null
done
grep -q '"allow":true' <(verify_once "$BIG_URL" "$WORK/big.txt") || { log "the 1M sidecar does not allow its first key"; exit 1; }
grep -q '"denyCode":"4012"' <(verify_once "$BIG_URL" "$WORK/unknown.txt") || { log "an unknown key was not denied 4012"; exit 1; }

run_wrk "hit 10k" "$SMALL_URL" "$WORK/small.txt" 10000 "$SMALL_PID"; h10=$RPS
run_wrk "hit 1M" "$BIG_URL" "$WORK/big.txt" 10000 "$BIG_PID"; h1m=$RPS
run_wrk "unknown 10k" "$SMALL_URL" "$WORK/unknown.txt" 0 "$SMALL_PID"; u10=$RPS
run_wrk "unknown 1M" "$BIG_URL" "$WORK/unknown.txt" 0 "$BIG_PID"; u1m=$RPS
sleep 6 # one more lastUsedAt flush
echo "RSS after hit and unknown loads: 10k $(rss "$SMALL_PID")"
echo "RSS after hit and unknown loads: 1M  $(rss "$BIG_PID") (target VmRSS ≤ 300 MiB)"
run_wrk "spread 1M (all keys)" "$BIG_URL" "$WORK/big.txt" 0 "$BIG_PID"; s1m=$RPS
echo "ratio 1M/10k: hit $(ratio "$h1m" "$h10") · unknown $(ratio "$u1m" "$u10") · spread-1M/hit-10k $(ratio "$s1m" "$h10")"
echo "RSS after the spread load too: 1M $(rss "$BIG_PID") (every key used: the whole hashes bucket mapped, lastUsedAt for each)"
stop_pid "$SMALL_PID"; stop_pid "$BIG_PID"

for s in small big; do
  echo "in-process, $s store:"
  KEYGATE_BENCH_DB=$WORK/$s.db KEYGATE_BENCH_SECRETS=$WORK/$s.txt "$BIN/sidecar.test" -test.run XXX -test.bench VerifyStore -test.benchtime "$BENCHTIME" | grep '^Benchmark'
done
