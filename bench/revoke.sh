#!/usr/bin/env bash
# bench/revoke.sh (make bench-revoke): revoke → first denial at the gateway,
# through kongemu running the real keygate plugin (docs/REVOCATION.md).
#
#   bbolt      one node: a sidecar on bbolt, kongemu in front of it; keys
#              are created and revoked on that sidecar.
#   postgres   two nodes on one PostgreSQL database: sidecar A + kongemu A,
#              sidecar B + kongemu B; keys are created and revoked on A and
#              the denial is awaited at gateway B (so the revoke travels A →
#              NOTIFY → B → B's stream → plugin B). Needs $REVOKE_POSTGRES
#              (else $KEYGATE_TEST_POSTGRES): a database URL the sidecars may
#              migrate; skipped without one.
#
# bench/revoke (Go) drives each: per trial a new key, allowed once at the
# gateway (its facts are then cached there for cache_ttl_ms = 1 s: only the
# push can make the gateway deny sooner), the revoke sent while a poller
# asks the gateway back to back; the figure is send-revoke → first 401.
# Prints p50/p90/p99/max. Environment: N (200 trials), MODES ("bbolt
# postgres"), PIN (0, the default here: unpinned, since this measures latency
# not CPU cost; 1: every server process on CPU 1, the driver on CPU 0).
PIN=${PIN:-0}
source "$(dirname "$0")/lib.sh"
N=${N:-200}
MODES=${MODES:-bbolt postgres}
PG=${REVOKE_POSTGRES:-${KEYGATE_TEST_POSTGRES:-}}
export KEYGATE_ADMIN_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')

build ./cmd/keygate ./cmd/keygate-sidecar ./cmd/kongemu ./examples/upstream ./bench/revoke
machine

free_port() {
  local p
  while :; do
    p=$(( 20000 + RANDOM % 30000 ))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}
UPSTREAM=127.0.0.1:$(free_port)
$(server_cpu) "$BIN/upstream" --listen "$UPSTREAM" 2>"$WORK/upstream.log" &
PIDS+=($!)
wait_http "${PIDS[-1]}" "http://$UPSTREAM/" || { cat "$WORK/upstream.log" >&2; exit 1; }

# start_node NAME [sidecar args...]: a sidecar and a kongemu in front of it;
# sets NODE_SIDECAR and NODE_GATEWAY.
start_node() {
  local name=$1 dir=$WORK/$1 kpid
  shift
  mkdir -p "$dir/kong"
  SIDECAR_ARGS="$*" start_sidecar "$dir/store.db" "$dir/sidecar.log"
  NODE_SIDECAR=$SIDECAR_URL
  cat >"$dir/kong.yml" <<YML
_format_version: "3.0"
services:
  - name: orders
    url: http://$UPSTREAM
    routes:
      - name: orders-keygate
        paths:
          - /orders
        strip_path: false
        plugins:
          - name: keygate
            config:
              route_role: enforce
              sidecar_url: $NODE_SIDECAR
              required_scopes:
                - payment:read
              cache_ttl_ms: 1000
              failure_limit_per_minute: 0 # the poller sees many 4012s
YML
  echo 'nginx_main_env = KEYGATE_GATEWAY_SECRET' >"$dir/kong.conf"
  : >"$dir/kongemu.log"
  $(server_cpu) "$BIN/kongemu" --config "$dir/kong.yml" --conf "$dir/kong.conf" --plugin "$BIN/keygate" --listen 127.0.0.1:0 \
    --prefix "$dir/kong" 2>>"$dir/kongemu.log" &
  kpid=$!
  PIDS+=("$kpid")
  for _ in $(seq 1500); do
    grep -q 'kongemu listening' "$dir/kongemu.log" && break
    kill -0 "$kpid" 2>/dev/null || break
    sleep 0.02
  done
  NODE_GATEWAY=http://$(grep -o 'kongemu listening.* addr=[0-9.:]*' "$dir/kongemu.log" | head -1 | sed 's/.*addr=//')
  [ "$NODE_GATEWAY" != http:// ] || { cat "$dir/kongemu.log" >&2; exit 1; }
  log "$name: sidecar $NODE_SIDECAR · gateway $NODE_GATEWAY"
}

for mode in $MODES; do
  case $mode in
  bbolt)
    start_node bbolt
    $(client_cpu) "$BIN/revoke" -label "bbolt, one node:" -n "$N" -gateway "$NODE_GATEWAY" -revoke-sidecar "$NODE_SIDECAR"
    ;;
  postgres)
    if [ -z "$PG" ]; then log "postgres: skipped (set REVOKE_POSTGRES)"; continue; fi
    start_node pg-a --store "$PG"
    a_sidecar=$NODE_SIDECAR
    start_node pg-b --store "$PG"
    $(client_cpu) "$BIN/revoke" -label "PostgreSQL, revoke on sidecar A, denial at gateway B:" -n "$N" \
      -workspace "bench-revoke-$(date +%s)" -gateway "$NODE_GATEWAY" -revoke-sidecar "$a_sidecar"
    ;;
  *) log "unknown mode $mode"; exit 2 ;;
  esac
done
