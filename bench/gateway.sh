#!/usr/bin/env bash
# bench/gateway.sh (make bench-gateway): the whole path through kongemu —
# requests/s and p50 of a product route with the keygate enforce plugin
# against the same route without any plugin, and the PDK calls per request.
#
# Builds keygate, keygate-sidecar, kongemu, examples/upstream and
# bench/keygen; generates 10,000 keys without IP whitelist (the common case:
# 4 PDK calls); starts the sidecar (TCP loopback, or SIDECAR=unix), the
# example upstream and kongemu (--expose-pdk-calls) with a kong.yml of one
# service and two routes to it:
#   /orders  keygate, route_role enforce (required_scopes payment:read, LIVE,
#            hide_credentials, cache_ttl_ms 1000)
#   /open    no plugin (strip_path: the upstream sees /orders/42 too)
# Then wrk (bench/gateway.lua, X-API-Key on both) alternately (with the CPU
# time per request of all server processes: kongemu, the plugin server, the
# sidecar and the upstream):
#   open             GET /open/orders/42
#   enforce-10k      GET /orders/42, a random key of 10,000 (with the
#                    invalidation stream live each key's facts stay cached
#                    for cache_ttl_pushed_ms, 5 min: after the warm-up
#                    almost no sidecar round trip; with PUSHED=0 most
#                    requests miss the plugin's 1 s cache)
#   enforce-hot100   GET /orders/42, a random key of 100 (plugin cache hits)
# ROUNDS times; prints rps, p50, p99 and the enforce/open ratios, the
# sidecar's verify calls during each enforce run (per key per minute), and the
# X-Kongemu-Pdk-Calls of one allowed request for a key without and one with
# an IP whitelist (created through the admin API).
# Environment: DUR (10s), CONNS (64), THREADS (1), ROUNDS (2), SIDECAR
# (tcp|unix), PIN (1: wrk on CPU 0 and every server process — kongemu, the
# plugin, the sidecar, the upstream — on CPU 1: the rates are then the
# server side's CPU cost per request; PIN=0: all unpinned), PUSHED
# (cache_ttl_pushed_ms of the route, default 300000; 0: no stream).
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-2}
SIDECAR=${SIDECAR:-tcp}
PUSHED=${PUSHED:-300000}
export KEYGATE_ADMIN_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')

free_port() {
  local p
  while :; do
    p=$(( 20000 + RANDOM % 30000 ))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

need_wrk
build ./cmd/keygate ./cmd/keygate-sidecar ./cmd/kongemu ./examples/upstream ./bench/keygen
machine
"$BIN/keygen" -n 10000 -cidrs 0 -scopes payment:read -db "$WORK/store.db" -secrets "$WORK/store.txt" 2>/dev/null

if [ "$SIDECAR" = unix ]; then
  listen=unix:$WORK/sidecar.sock
else
  listen=127.0.0.1:$(free_port)
fi
$(server_cpu) "$BIN/keygate-sidecar" --listen "$listen" --db "$WORK/store.db" 2>"$WORK/sidecar.log" &
PIDS+=($!)
if [ "$SIDECAR" = unix ]; then
  sidecar_url=$listen
  wait_http "${PIDS[-1]}" http://sidecar/readyz --unix-socket "$WORK/sidecar.sock" || { cat "$WORK/sidecar.log" >&2; exit 1; }
else
  sidecar_url=http://$listen
  wait_http "${PIDS[-1]}" "$sidecar_url/readyz" || { cat "$WORK/sidecar.log" >&2; exit 1; }
fi

upstream=127.0.0.1:$(free_port)
$(server_cpu) "$BIN/upstream" --listen "$upstream" 2>"$WORK/upstream.log" &
PIDS+=($!)
wait_http "${PIDS[-1]}" "http://$upstream/" || { cat "$WORK/upstream.log" >&2; exit 1; }

cat >"$WORK/kong.yml" <<YML
_format_version: "3.0"
services:
  - name: orders
    url: http://$upstream
    routes:
      - name: orders-keygate
        paths:
          - /orders
        strip_path: false
        plugins:
          - name: keygate
            config:
              route_role: enforce
              sidecar_url: $sidecar_url
              sidecar_timeout_ms: 1000
              required_scopes:
                - payment:read
              allowed_modes:
                - LIVE
              hide_credentials: true
              cache_ttl_ms: 1000
              cache_ttl_pushed_ms: $PUSHED
      - name: orders-open
        paths:
          - /open
        strip_path: true
YML
mkdir -p "$WORK/kong"
: >"$WORK/kongemu.log"
# As on a real node, the plugin sees only the variables nginx_main_env lists.
echo 'nginx_main_env = KEYGATE_GATEWAY_SECRET' >"$WORK/kong.conf"
$(server_cpu) "$BIN/kongemu" --config "$WORK/kong.yml" --conf "$WORK/kong.conf" --plugin "$BIN/keygate" --listen 127.0.0.1:0 \
  --prefix "$WORK/kong" --expose-pdk-calls 2>>"$WORK/kongemu.log" &
KONGEMU_PID=$!
PIDS+=("$KONGEMU_PID")
for _ in $(seq 1500); do
  grep -q 'kongemu listening' "$WORK/kongemu.log" && break
  kill -0 "$KONGEMU_PID" 2>/dev/null || break
  sleep 0.02
done
GW=http://$(grep -o 'kongemu listening.* addr=[0-9.:]*' "$WORK/kongemu.log" | head -1 | sed 's/.*addr=//')
[ "$GW" != http:// ] || { cat "$WORK/kongemu.log" >&2; exit 1; }

pdk() { curl -s -o /dev/null -D - -H "X-API-Key: $1" "$GW/orders/42" | tr -d '\r' | awk 'tolower($1)=="x-kongemu-pdk-calls:" {c=$2} /^HTTP/ {s=$2} END {print s " " c}'; }
read -r st calls <<<"$(pdk "$(head -1 "$WORK/store.txt")")"
[ "$st" = 200 ] || { log "enforce route answered $st"; cat "$WORK/kongemu.log" >&2; exit 1; }
if [ "$SIDECAR" = unix ]; then to_sidecar=(--unix-socket "$WORK/sidecar.sock" http://sidecar); else to_sidecar=("$sidecar_url"); fi
wl=$(curl -fsS -X POST "${to_sidecar[@]:0:${#to_sidecar[@]}-1}" "${to_sidecar[-1]}/web/v1/workspaces/bench-ws-wl/api-keys" \
  -H "Authorization: Bearer $KEYGATE_ADMIN_TOKEN" -H 'Content-Type: application/json' \
  --data '{"name":"whitelisted","scopes":["payment:read"],"ipWhitelist":["127.0.0.1","10.0.0.0/8"]}')
wlkey=$(printf '%s' "$wl" | grep -o '"secret":"[^"]*"' | cut -d'"' -f4)
read -r wst wcalls <<<"$(pdk "$wlkey")"
read -r ost ocalls <<<"$(curl -s -o /dev/null -D - -H "X-API-Key: $(head -1 "$WORK/store.txt")" "$GW/open/orders/42" | tr -d '\r' | awk 'tolower($1)=="x-kongemu-pdk-calls:" {c=$2} /^HTTP/ {s=$2} END {print s " " (c==""?0:c)}')"
echo "PDK calls per allowed request: key without whitelist $calls (status $st; budget 4) · with whitelist $wcalls (status $wst; budget 5) · route without plugin $ocalls (status $ost)"
# The plugin server kongemu started (its CPU counts as the gateway's).
SERVER_PIDS=("${PIDS[@]}" $(ps -o pid= --ppid "$KONGEMU_PID"))
log "sidecar $sidecar_url · upstream http://$upstream · gateway $GW · server pids ${SERVER_PIDS[*]}"

# verifies: the sidecar's verify calls so far (keygate_verify_total, every code).
verifies() { curl -fsS "${to_sidecar[@]:0:${#to_sidecar[@]}-1}" "${to_sidecar[-1]}/metrics" | awk '/^keygate_verify_total/ {n += $2} END {print n + 0}'; }

gw_wrk() { # LABEL PATH LIMIT
  local before=0 after=0 p v0 t0
  for p in "${SERVER_PIDS[@]}"; do before=$((before + $(cpu_ticks "$p"))); done
  v0=$(verifies) t0=$(date +%s%N)
  KG_SECRETS=$WORK/store.txt KG_LIMIT=$3 KG_PATH=$2 wrk_cmd "$1" -s "$ROOT/bench/gateway.lua" "$GW"
  VERIFIES=$(( $(verifies) - v0 ))
  VPKM=$(awk -v v="$VERIFIES" -v k="$([ "$3" = 0 ] && echo 10000 || echo "$3")" -v ns=$(( $(date +%s%N) - t0 )) 'BEGIN {printf "%.3f", v / k / (ns / 6e10)}')
  for p in "${SERVER_PIDS[@]}"; do after=$((after + $(cpu_ticks "$p"))); done
  report "$1" "$before" "$after"
}

# Warm-up over all 10,000 keys (WARM, default 15 s: ~3 requests a key).
DUR=${WARM:-15s} gw_wrk warm-up /orders/42 0 >/dev/null
for r in $(seq "$ROUNDS"); do
  gw_wrk "round$r open" /open/orders/42 0; open=$RPS open_us=$SRV_US
  gw_wrk "round$r enforce-10k" /orders/42 0; e10k=$RPS e10k_us=$SRV_US v10k=$VERIFIES p10k=$VPKM
  gw_wrk "round$r enforce-hot100" /orders/42 100; hot=$RPS hot_us=$SRV_US vhot=$VERIFIES phot=$VPKM
  echo "round$r ratio enforce/open: requests/s 10k keys $(ratio "$e10k" "$open"), hot 100 keys $(ratio "$hot" "$open") · server CPU per request open/enforce 10k keys $(ratio "$open_us" "$e10k_us"), hot $(ratio "$open_us" "$hot_us")"
  echo "round$r sidecar verify calls: 10k keys $v10k ($p10k per key per minute), hot 100 keys $vhot ($phot per key per minute)"
done
