// Package plugin is keygate's Kong Go plugin (github.com/Kong/go-pdk
// v0.11.0, embedded plugin server; the binary is cmd/keygate). One plugin,
// two roles chosen per route by config.route_role:
//
//   - manage, on the key-management routes /web/v1/workspaces/{workspaceId}/…:
//     verifies the caller's Bearer JWT (4010), checks the caller is OWNER of
//     the workspace in the path (4030) and knows the portal from
//     X-PORTAL-ACCESS-CODE (4032), in that order; then removes client
//     X-Keygate-* headers and the caller's Authorization and sets
//     X-Keygate-Identity, an assertion signed with the gateway secret
//     (internal/identity), and Kong proxies the request to the sidecar.
//   - enforce, on product traffic: takes the API key from key_headers (4011),
//     checks its format and checksum locally (4012), asks the sidecar's
//     verify API for the key's facts (cached, see below) and decides with
//     apikey.Decide — the sidecar's own decision code: 4012 → mode 4035 →
//     scopes 4033 → client IP 4034. On success it calls
//     kong.client.authenticate with the apiKeyId as credential, sets
//     X-Api-Key-Id, X-Workspace-Id and X-Api-Key-Mode upstream in one call
//     and removes the credential header (unless hide_credentials is false).
//
// # Invariants
//
//   - Fail closed. Every rejection, and every failure, ends the request with
//     kong.response.exit and the envelope of docs/CONTRACT.md §3 (requestId in the body and
//     in X-Request-Id). A sidecar that cannot be reached, answers
//     something that is not a verify envelope, or refuses our secret is
//     503/5030; one slower than sidecar_timeout_ms is 504/5040. Nothing is
//     allowed without facts from the sidecar confirmed no longer than
//     cache_ttl_ms ago, or the shorter cacheMs the sidecar answers when its
//     own view may lag (a PostgreSQL store shared by several sidecars):
//     confirmed when fetched, or by the last line read on the live
//     invalidation stream they were fetched under.
//   - A configuration that breaks a rule is never half-applied: every
//     request of that route answers 500/5000 and each problem is logged
//     once. Config.Validate reports all problems at once. A value that
//     still looks like a Kong vault reference ({vault://…}) in any field,
//     or as the gateway secret from the environment or file, is refused:
//     Kong resolves references only in fields a schema marks
//     referenceable, which the schema of a Go plugin server cannot.
//   - Failures an operator must see go through kong.log.err / kong.log.warn
//     (konglog.go), since Kong logs the plugin's stderr at INFO and drops
//     it at its default log_level notice: a refused configuration (with
//     every problem; a missing gateway secret names nginx_main_env), a key
//     service unreachable (503/5030) or slower than sidecar_timeout_ms
//     (504/5040), a failed PDK call, a panic, headers that are not UTF-8
//     (400/4000), a manage route without portal codes. One PDK call each,
//     on those paths only, at most one line per subject (failure kind and
//     route instance or sidecar) per 30 s; the next line counts the ones
//     left out. The JSON lines on stderr stay unlimited.
//   - Client headers that spell what keygate tells the upstream —
//     X-Keygate-*, X-Api-Key-Id, X-Workspace-Id, X-Api-Key-Mode, in any
//     case, with '_' for any '-' (Kong turns underscores_in_headers on) —
//     never reach the upstream of an allowed request on either role: the
//     exact spellings keygate sets are replaced by its one set_headers, any
//     other is removed with one clear_header each. A request without them
//     costs no call for this (reserved.go).
//   - A panic in the handler is recovered and answered 500/5000 (go-pdk
//     does not recover; a panic would kill the plugin server).
//   - The Config is read-only after Kong decoded it; the instance state is
//     built once (sync.Once) and immutable. The facts cache, the sidecar
//     connection pools and the JWKS key sets are process-wide, bounded and
//     keyed by what they cache (sidecar URL + SHA-256 of the secret; sidecar
//     address; JWKS URL); no goroutine runs per instance (go-pdk has no
//     close hook). The background work is a JWKS fetch, which ends within
//     JWKSFetchTimeout, and one invalidation stream per sidecar URL in use
//     (push.go), which ends when no request used it for 10 minutes.
//   - The cache holds key facts, never a route's decision. Facts fetched
//     while the sidecar's invalidation stream is live live for
//     cache_ttl_pushed_ms (default 5 min) and are dropped when the sidecar
//     pushes their key id; the moment the stream stops confirming them
//     (no line read for cache_ttl_ms) they fall back to cache_ttl_ms
//     (≤ 1000 ms) counted from the last confirmation, so a revoked or
//     expired key is rejected within 1 s whatever the stream does
//     (docs/REVOCATION.md). Unknown keys are cached negatively for
//     cache_ttl_ms only. The stream's state changes go to the plugin's log
//     (stderr, Kong's error log) from its goroutine, not through kong.log:
//     no PDK call.
//   - A request with MaxHeaders (1000) header lines or more is answered
//     400/4000 before anything else: Kong hands the plugin only the first
//     MaxHeaders, and a second key or a client X-Keygate-* header could
//     hide behind them.
//   - The request body is never read; the API key is never read from the
//     query string. A key failing the format or checksum check, or two
//     different keys in one request, is 4012 without asking the sidecar.
//   - JWT: only jwt_algorithms are accepted (never "none"); the key is chosen
//     by the algorithm's family only (an HS* token is checked against
//     jwt_secret only, never against a public key: no algorithm confusion);
//     exp is required; iss/aud are checked when configured; the token is at
//     most 8 KiB. An unknown kid triggers at most one JWKS fetch per
//     JWKSMinRefresh for the whole process (single-flight; waiters give up
//     after JWKSFetchTimeout).
//   - PDK calls (each one a round trip to Kong): an allowed request costs 4
//     (get_headers, authenticate, set_headers, clear_header), 5 when the key
//     has an IP whitelist (get_forwarded_ip is asked only then); a request
//     rejected before the sidecar is asked costs 2 (get_headers, exit).
//     Exceptions: a client that sends the same key in two key headers
//     gets both removed, one clear_header each (5 calls, 6 with a
//     whitelist) — hiding the credential matters more than the call; and
//     each client header spelling a keygate header with '_' or
//     X-Keygate-* costs one clear_header (above).
//     The failed-verification limiter adds get_forwarded_ip, at most once
//     per request, only (a) on a 4012 decided with the key service's
//     answer (3 calls) and on a manage 4010 (3 calls), to count the failure
//     against the client, and (b) while some client is blocked, before a
//     request that would ask the key service (a cache miss) or verify a
//     JWT. In normal operation nobody is blocked and the budgets above hold;
//     during an attack a cache miss costs one call more (5), a cached key
//     still 4.
//   - Failed-verification limiter (failure_limit_per_minute,
//     failure_burst; internal/limiter, golang.org/x/time/rate token
//     buckets): a client IP (an IPv6 address counts as its /64) that fails
//     failure_burst times — enforce: 4012 for a key the key service does
//     not accept (unknown, revoked, expired); manage: 4010 — is answered
//     429/4290 with Retry-After (whole seconds) until its bucket refills one
//     token (60/failure_limit_per_minute s); on manage before a JWT is
//     verified. On enforce, a cached valid key is decided as usual (no
//     store lookup is involved), and so is a key that was valid when last
//     asked (its cache entry expired but is remembered); any other
//     well-formed key from a blocked address is still verified with the
//     key service within a process-wide budget of BlockedVerifyPerSecond
//     (a valid one is allowed, an invalid one answered 429 and counted),
//     and answered 429 without a lookup once the budget is spent: honest
//     clients behind an address an attacker shares keep working, with a
//     key created or rolled a moment ago too (docs/SECURITY.md). A 4034 (client
//     outside the key's whitelist) counts against the client address too,
//     never against the key, so a leaked key tried from elsewhere cannot
//     lock its owner out. Denials that do not depend on the client
//     (4033/4035) count against the apiKeyId on the route's policy
//     (required_scopes + allowed_modes): once blocked, every request
//     presenting that key to a route with that policy — denied anyway — is
//     429 until Retry-After, without a PDK call for the IP; routes whose
//     policy the key satisfies are unaffected.
//     Not counted: a missing key (4011), a malformed key or bad checksum,
//     two different keys (4012 decided from the headers, 2 calls, no store
//     lookup — counting them would cost an IP call on the cheapest
//     rejection), 4030/4031/4032 (the token was valid). The state is
//     process-wide, shared by every route with the same limiter settings
//     (per role), bounded (MaxFailureKeys keys per limiter, least recently
//     failed evicted; refilled buckets dropped), with no goroutine. Clients
//     behind one NAT address share a bucket: raise failure_burst for such
//     routes or set failure_limit_per_minute 0 to turn the limiter off.
//   - Never logged: a secret, an Authorization or X-API-Key value, a JWT, the
//     gateway secret. Logged: apiKeyId, workspace, codes, reasons, request id.
//     Logs are JSON lines on stderr, which Kong copies to its error log at
//     INFO (hidden at its default log_level notice; failures an operator
//     must see also go through kong.log, above); KEYGATE_LOG_LEVEL=debug
//     logs every decision (list it in nginx_main_env).
//
// # Registering with Kong
//
// Install the binary as /usr/local/bin/keygate and add to kong.conf:
//
//	pluginserver_names = keygate
//	pluginserver_keygate_start_cmd = /usr/local/bin/keygate
//	pluginserver_keygate_query_cmd = /usr/local/bin/keygate -dump
//	plugins = bundled,keygate
//
// Kong names a Go plugin after its binary, so the file must be called
// keygate. `keygate -dump` prints the plugin info (name keygate, phase
// access, priority 1260 — with the authentication plugins, before
// rate-limiting — and the config schema); schema.lua carries the same
// fields with their defaults for Konnect/hybrid control planes.
//
// When the gateway secret comes from the environment rather than the
// config, set KEYGATE_GATEWAY_SECRET (or KEYGATE_GATEWAY_SECRET_FILE, a file
// holding it) in the environment of Kong's master process and list it for
// nginx, which drops every other variable:
//
//	nginx_main_env = KEYGATE_GATEWAY_SECRET
//
// Without it every request answers 500/5000 and kong.log says so, naming
// nginx_main_env. Kong 3.8 or later is required: earlier versions proxy a
// request without the plugin when the plugin server errs.
//
// # Configuration
//
// Absent or null fields take the default; pointer-typed numbers and booleans
// tell an explicit 0/false from "absent".
// Generated from Config's tags by `go generate ./plugin`; do not edit:
//
//	field                     role     type                     default                        meaning
//	route_role                both     string                   —                              required: manage (key-management routes) or enforce (product traffic)
//	sidecar_url               enforce  string                   "http://127.0.0.1:8080"        where the verify API is: https://host:port, unix:/abs/path.sock, or http://host:port to a loopback host only
//	sidecar_ca_file           enforce  string                   —                              PEM CA certificates an https sidecar_url's certificate must chain to; the system roots when empty
//	sidecar_timeout_ms        enforce  integer                  1000                           per verify call, 1..10000 (far below Kong's 60 s plugin socket timeout); over it 504/5040
//	gateway_secret            both     string                   —                              shared with the sidecar, at least 16 bytes; when empty, from $KEYGATE_GATEWAY_SECRET or the file $KEYGATE_GATEWAY_SECRET_FILE names (listed in kong.conf's nginx_main_env); a {vault://…} reference is refused
//	jwt_algorithms            manage   array of string          —                              required for manage: the accepted algorithms, a subset of HS256/384/512 RS256/384/512 PS256/384/512 ES256/384/512 EdDSA
//	jwt_secret                manage   string                   —                              HMAC secret, at least 32 bytes; required with an HS* algorithm
//	jwt_public_keys           manage   array of string          []                             PEM public keys (PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE): RSA ≥ 2048 bits, EC P-256/384/521, Ed25519
//	jwks_url                  manage   string                   —                              JWKS endpoint (https, redirects to https only; http only to loopback), keys cached by kid, fetched again every 60 s (a removed key stops verifying within that) and on an unknown kid at most once per 10 s
//	jwt_issuer                manage   string                   —                              iss must equal it when set
//	jwt_audience              manage   string                   —                              aud must contain it when set
//	jwt_leeway_seconds        manage   integer                  30                             clock skew allowed on exp/nbf/iat, 0..600
//	roles_claim               manage   string                   "workspaces"                   the JWT claim mapping workspace ids to roles, e.g. {"ws_123": "OWNER"}
//	portal_codes              manage   map of string to string  {}                             X-PORTAL-ACCESS-CODE value → portal name
//	test_mode_portals         manage   array of string          ["PARTNER"]                    portals that may create TEST keys
//	key_headers               enforce  array of string          ["Authorization","X-API-Key"]  headers the key is read from; Authorization must be "Bearer <key>"
//	required_scopes           enforce  array of string          —                              required for enforce, non-empty: every one must be granted
//	allowed_modes             enforce  array of string          ["LIVE"]                       key modes the route accepts: LIVE and/or TEST
//	hide_credentials          enforce  boolean                  true                           remove the key's header before proxying
//	cache_ttl_ms              enforce  integer                  1000                           how long key facts are cached, 1..1000: the revocation bound
//	cache_ttl_pushed_ms       enforce  integer                  300000                         how long key facts are cached while the sidecar's invalidation stream is live, 0..3600000 (0: no stream); otherwise cache_ttl_ms applies
//	failure_limit_per_minute  both     integer                  30                             failures forgiven per minute per client IP or key id, 0..60000; 0 turns the limiter off
//	failure_burst             both     integer                  20                             failures at once before 429/4290, 1..10000
//
// On a manage route the workspace is the path segment after
// /web/v1/workspaces/ in kong.request.get_path (the path the client sent);
// it must match ^[A-Za-z0-9._-]{1,64}$, and a path with percent-encoding, a
// backslash, an empty, "." or ".." segment names no workspace (4030). The
// route must forward that path unchanged to the sidecar (strip_path: false).
//
// The credential given to kong.client.authenticate has the apiKeyId as id
// and no consumer: keygate keys are not Kong consumers, and Kong requires
// one of the two. Plugins that need a consumer (acl) do not apply.
package plugin
