// Package kongemu implements Kong's side of the Go plugin-server protocol
// (ProtoBuf:1) so that a go-pdk plugin binary can be driven end to end
// without Kong. It is a development and test harness, not a gateway:
// production runs real Kong.
//
// Like Kong, it runs `PLUGIN -dump` (protocol ProtoBuf:1, exactly one plugin
// named after the binary, with an access phase), starts `PLUGIN -kong-prefix
// DIR`, logs the plugin's output as "[name:pid]", waits for DIR/name.socket,
// restarts the process at most once a second when it dies, and starts one
// plugin instance per plugin entry with cmd_start_instance (the config as
// JSON, with __seq__, __plugin_id and __key__ added, and every schema field
// not given sent as null as Kong does). An event that fails because the
// plugin dropped the connection ("no plugin instance", a restarted process)
// restarts the instance and is retried once.
//
// # Declarative configuration
//
// Supported (_format_version "3.0"): services (name, id, url or
// protocol/host/port/path, connect/read/write timeouts in ms; retries and
// tags accepted and ignored), nested or top-level routes (name, id, service,
// paths as plain prefixes, methods, strip_path defaulting to true,
// preserve_host, protocols http/https, path_handling v0, tags) and plugin
// entries (name, config, enabled defaulting to true, id, instance_name,
// tags, protocols; top-level entries may name a route or a service).
// Service URLs are http://, https:// or unix:/path.sock. Any other key
// (hosts, headers, snis, consumers, upstreams, ...), a regex path ("~..."),
// a route without paths, path_handling v1, a config field the plugin's
// schema lacks, or a plugin other than the plugin binary is an error at
// start-up, never ignored.
//
// Routing: the longest matching path prefix among routes whose methods
// allow the request wins (on a tie a route with methods, then the first
// declared); the path is normalised first as Kong does. No match answers
// 404 {"message":"no Route matched with those values"}. Plugin precedence
// is route > service > global; disabled entries are dropped first.
//
// # PDK
//
// The access event is served over a bounded pool of kept-alive
// connections, one event per connection at a time, bounded by
// Config.EventTimeout. Served methods: kong.request.get_scheme, get_host,
// get_port, get_forwarded_scheme, get_forwarded_host, get_forwarded_port,
// get_http_version, get_method, get_path, get_path_with_query,
// get_raw_query, get_query_arg, get_query, get_header, get_headers,
// get_raw_body (bodies up to 8 MiB); kong.client.get_ip,
// get_forwarded_ip, get_port, get_forwarded_port, get_protocol,
// authenticate, get_credential, get_consumer; kong.ip.is_trusted;
// kong.response.exit, set_header, add_header, clear_header, set_headers;
// kong.service.request.set_header, add_header, clear_header, set_headers,
// set_path, set_raw_query, set_method, set_query, set_raw_body;
// kong.ctx.shared.set/get; kong.nginx.get_ctx/set_ctx, get_var (remote_addr,
// remote_port, realip_remote_addr, realip_remote_port, request_uri, uri,
// args, query_string, request_method, scheme, host, server_port,
// server_protocol, http_*), req_start_time, get_subsystem;
// kong.node.get_id; kong.log.alert/crit/err/warn/notice/info/debug;
// kong.router.get_route, get_service. Any other method (or an unknown
// nginx variable, or bad arguments) fails the request with 500, a JSON body
// naming the problem in "kongemu_error" and a log line naming the method,
// so that a missing feature is visible. The max argument of get_headers and
// get_query defaults to 100 when 0 and must not exceed 1000.
//
// kong.response.exit ends the request like Kong: the call is not answered,
// the connection is dropped and nothing is proxied. kong.client.get_ip is
// the direct peer; get_forwarded_ip follows nginx's realip module with
// Config.TrustedIPs, RealIPHeader and RealIPRecursive (nobody is trusted by
// default). kong.service.request changes are what the upstream gets and,
// as in Kong, what later kong.request.get_header calls see.
//
// With Config.ExposePDKCalls every response the plugin ran for carries
// X-Kongemu-Pdk-Calls (the number of PDK calls of the event) and
// X-Kongemu-Pdk-Methods (their names, in order).
//
// # Proxying
//
// Upstream paths follow Kong's path_handling v0 with strip_path; the query
// string and body are forwarded as received (the body streamed unless the
// plugin read it); hop-by-hop headers are removed; X-Forwarded-For,
// X-Forwarded-Proto, X-Forwarded-Host, X-Forwarded-Port, X-Forwarded-Path,
// X-Forwarded-Prefix and X-Real-IP are set as Kong does (client values kept
// only from trusted peers); the Host is the service's unless preserve_host.
// Unreachable upstreams answer 502, timeouts 504, with Kong's JSON bodies.
//
// Not supported: TLS on the proxy listener (the scheme is always http),
// phases other than access, consumers and credentials from a database, the
// Via and X-Kong-* latency headers, retries and load balancing, WebSocket
// upgrades, and config changes while running.
package kongemu
