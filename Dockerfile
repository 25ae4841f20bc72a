# keygate on Kong: one image with the keygate plugin server and the sidecar.
#   docker build -t keygate .
#   Kong:    docker run -e KEYGATE_GATEWAY_SECRET=... -v $PWD/kong/kong.yml:/kong/kong.yml keygate
#   Sidecar: docker run -e KEYGATE_GATEWAY_SECRET=... -e KEYGATE_ADMIN_TOKEN=... -v keygate-data:/data \
#              keygate keygate-sidecar --listen 0.0.0.0:8080 --db /data/keygate.db
# (It cannot be built on the development machines, which have no Docker engine.)

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/keygate ./cmd/keygate \
 && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/keygate-sidecar ./cmd/keygate-sidecar

FROM kong:3.9
USER root
COPY --from=build /out/keygate /out/keygate-sidecar /usr/local/bin/
COPY kong/kong.yml /kong/kong.yml
COPY schema.lua /usr/local/share/keygate/schema.lua
USER kong
# Register the Go plugin server (kong.conf settings as KONG_* variables) and
# run DB-less from the declarative file.
ENV KONG_DATABASE=off \
    KONG_DECLARATIVE_CONFIG=/kong/kong.yml \
    KONG_PLUGINS=bundled,keygate \
    KONG_PLUGINSERVER_NAMES=keygate \
    KONG_PLUGINSERVER_KEYGATE_START_CMD=/usr/local/bin/keygate \
    KONG_PLUGINSERVER_KEYGATE_QUERY_CMD="/usr/local/bin/keygate -dump" \
    KONG_NGINX_MAIN_ENV=KEYGATE_GATEWAY_SECRET
