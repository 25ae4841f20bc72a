// Package e2e is keygate's end-to-end suite: API keys created through the
// gateway's management route, used on the product routes, every rejection,
// revocation within the cache bound, the failed-verification limiter,
// hostile input, and failing closed when the sidecar is down.
//
// With none of the variables below set, every test starts its own stack
// on loopback: kongemu (Kong's side of the plugin protocol) running the
// real keygate plugin with a copy of kong/kong.yml (ports, JWT secret and
// portal codes replaced by fresh ones), the sidecar on a bbolt file, and
// examples/upstream. This is what `make test` and CI run.
//
// To run the same tests unchanged against a gateway started elsewhere
// (a real Kong, e.g. from deploy/; see deploy/README.md), set all of:
//
//	KEYGATE_E2E_GATEWAY_URL    Kong's proxy URL, e.g. http://127.0.0.1:8000
//	KEYGATE_E2E_SIDECAR_URL    the sidecar's URL (admin API, /readyz, /metrics)
//	KEYGATE_E2E_ADMIN_TOKEN    the sidecar's admin token (its KEYGATE_ADMIN_TOKEN)
//	KEYGATE_E2E_JWT_SECRET     the manage route's jwt_secret (the suite mints HS256 owner tokens)
//	KEYGATE_E2E_PUBLIC_CODE    the portal access code that maps to PUBLIC
//	KEYGATE_E2E_PARTNER_CODE   the portal access code that maps to PARTNER (a test_mode_portals entry)
//
// and optionally:
//
//	KEYGATE_E2E_WORKSPACE      the workspace to create keys in (default: a fresh ws_e2e_… per run)
//	KEYGATE_E2E_STOP_SIDECAR   a shell command that stops the sidecar, e.g. "docker compose -f deploy/compose.yml stop sidecar"
//	KEYGATE_E2E_START_SIDECAR  a shell command that starts it again
//
// Setting some of the six and not the others is an error. The gateway
// must serve the routes of kong/kong.yml (/web/v1/workspaces, /console,
// /orders with orders:read and LIVE, /sandbox/orders with TEST), keep
// kong.yml's limiter settings, and take the client IP from X-Forwarded-For
// sent by the test client (trusted_ips covering the client, real_ip_header
// X-Forwarded-For): deploy/compose.e2e.yml sets that for a test run only.
//
// Against an external gateway, checks that only kongemu can make are left
// out and say so: PDK call counts (kongemu's X-Kongemu-Pdk-Calls), the
// soak (it samples the memory of the processes it starts), and the
// sidecar-down steps unless the stop/start commands are set. Where the
// gateway itself refuses a request (malformed header lines, oversized
// headers), any 4xx that is not a keygate envelope is accepted, since
// nginx's status differs from kongemu's.
package e2e
