# keygate on Kong: the official Kong image with the keygate plugin server
# and the keygate-sidecar binary, plus a small image of the example upstream.
#
# Kong Gateway (OSS) 3.8 or later is required: Kong 3.4–3.7 proxy a request
# WITHOUT the plugin when the plugin server errs. KONG_IMAGE must stay >= 3.8.
#
# NOT BUILT OR RUN in this repository's CI or on its development machines,
# which have no Docker engine. Reviewed line by line against the official
# image's sources, Kong/docker-kong at tag 3.9.3 (ubuntu/Dockerfile,
# docker-entrypoint.sh): see deploy/README.md, "What the image is".
#
#   docker build -t keygate .                                        Kong + plugin + sidecar
#   docker build --target example-upstream -t keygate-example-upstream .
#
# The whole stack (Kong, sidecar, PostgreSQL, example upstream):
# deploy/compose.yml, walked through step by step in deploy/README.md.
#
# Safe by default: the image carries NO declarative configuration and no
# secret. Started as is it runs DB-less with an empty configuration (every
# request 404). kong/kong.yml is the demo's and is not copied: its public
# JWT secret and portal codes, and deploy/kong.yml's CHANGE-ME placeholders,
# are refused by the plugin (every request of such a route answers 500/5000
# and Kong's log says why).

ARG KONG_IMAGE=kong:3.9
ARG GO_IMAGE=golang:1.26-bookworm

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static binaries: they run on the Ubuntu-based Kong image and on distroless.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/ ./cmd/keygate ./cmd/keygate-sidecar ./examples/upstream

# The example upstream of deploy/compose.yml (echoes what it receives).
FROM gcr.io/distroless/static-debian12:nonroot AS example-upstream
COPY --from=build /out/upstream /usr/local/bin/example-upstream
USER nonroot
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/example-upstream", "--listen", "0.0.0.0:9090"]

# The default target: Kong with keygate. The base image runs as user kong,
# with the prefix /usr/local/kong (owned kong:0), ENTRYPOINT
# /docker-entrypoint.sh, CMD ["kong", "docker-start"], STOPSIGNAL SIGQUIT
# and HEALTHCHECK `kong health`; all are kept. The entrypoint runs any other
# command as given (exec "$@"), so the sidecar runs from this image too:
# `keygate-sidecar …` (set stop_signal SIGTERM for it: SIGQUIT would not
# drain it). Kong Gateway (OSS) 3.8 or later: KONG_IMAGE must not go below.
FROM ${KONG_IMAGE}
USER root
# Kong starts the plugin server itself: the binary must be called keygate.
COPY --from=build /out/keygate /out/keygate-sidecar /usr/local/bin/
COPY schema.lua /usr/local/share/keygate/schema.lua
# The sidecar's bbolt data directory (not needed with --store postgres://),
# writable by the image's user; an empty named volume mounted here takes
# this owner.
RUN install -d -o kong -g 0 -m 0750 /var/lib/keygate
USER kong
# kong.conf settings as KONG_* variables (kong/kong.conf explains each).
# - DB-less; KONG_DECLARATIVE_CONFIG is left to the operator (no default
#   configuration in the image).
# - The plugin server: go-pdk listens on <-kong-prefix>/keygate.socket. Kong
#   3.9 looks for <prefix>/keygate.socket, 3.8 for
#   /usr/local/kong/keygate.socket whatever the prefix; both are the
#   image's prefix here. Changing KONG_PREFIX means changing the two
#   /usr/local/kong paths below with it (the entrypoint removes stale
#   sockets in the prefix before Kong starts).
# - nginx passes the plugin only the variables nginx_main_env lists: the
#   gateway secret (or its file) and the plugin's log level.
ENV KONG_DATABASE=off \
    KONG_PLUGINS=bundled,keygate \
    KONG_PLUGINSERVER_NAMES=keygate \
    KONG_PLUGINSERVER_KEYGATE_QUERY_CMD="/usr/local/bin/keygate -dump" \
    KONG_PLUGINSERVER_KEYGATE_START_CMD="/usr/local/bin/keygate -kong-prefix /usr/local/kong" \
    KONG_PLUGINSERVER_KEYGATE_SOCKET=/usr/local/kong/keygate.socket \
    KONG_NGINX_MAIN_ENV="KEYGATE_GATEWAY_SECRET; env KEYGATE_GATEWAY_SECRET_FILE; env KEYGATE_LOG_LEVEL"
