// Package kongemu implements Kong's side of the Go plugin-server protocol
// (ProtoBuf:1) so that a go-pdk plugin binary can be driven end to end
// without Kong. It is a development and test harness, not a gateway:
// production runs real Kong. Wherever a plugin's behaviour could depend on
// it, it plays Kong 3.8/3.9 with Kong's defaults; docs/KONG-FIDELITY.md
// lists each such behaviour with the Kong source it follows and its test.
//
// # kong.conf
//
// Config.Kong (LoadKongConf, `kongemu --conf`) holds what Kong takes from
// kong.conf: the plugin server registration (pluginserver_names and
// pluginserver_<name>_start_cmd, _query_cmd, _socket, with each version's
// defaults, Config.KongVersion), plugins, nginx_main_env, log_level,
// trusted_ips, real_ip_header and real_ip_recursive; KONG_<KEY> variables
// override the file. Other keys are ignored. Without it, Kong's defaults
// hold and Config.PluginPath names the plugin binary (queried with
// "-dump", started with "-kong-prefix PREFIX").
//
// # The plugin server
//
// Like Kong, it runs the query command, checks the dump (protocol
// ProtoBuf:1, exactly one plugin with an access phase), runs `exec
// START_CMD` through /bin/sh with only the environment an nginx worker
// keeps (the variables nginx_main_env lists, and TZ), logs the process's
// output at INFO as "[name:pid] line" (dropped at the default log_level
// notice), waits for the socket and restarts the process at most once a
// second when it dies. One plugin instance runs per plugin entry
// (cmd_start_instance with the config as JSON, __seq__, __plugin_id and
// __key__ added, and every schema field not given sent as null as Kong
// does). Every configuration load gives each entry a new node-wide __seq__:
// after a reload (Config.Reload, SIGHUP in cmd/kongemu, or a change of the
// kong.yml file) an entry's next event starts a new instance and the one
// it replaces is closed with cmd_close_instance. An event that fails
// because the plugin dropped the connection ("no plugin instance", a
// restarted process) forgets the instances, starts the instance again and
// is retried once; any other failure answers 500.
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
// Config.EventTimeout; a connection is not reused after
// kong.response.exit, as in Kong. Served methods: kong.request.get_scheme, get_host,
// get_port, get_forwarded_scheme, get_forwarded_host, get_forwarded_port,
// get_http_version, get_method, get_path, get_path_with_query,
// get_raw_query, get_query_arg, get_query, get_header, get_headers,
// get_raw_path,
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
// trusted_ips, real_ip_header (default X-Real-IP) and real_ip_recursive
// (nobody is trusted by default). get_path is Kong's normalize of the raw
// path; get_header matches "-" and "_" alike (underscores_in_headers on).
// Request bytes reach the plugin as they are, UTF-8 or not, so go-pdk
// fails a PDK call whose reply is not UTF-8, as behind Kong. kong.log.*
// lines are logged at their level when log_level lets them through.
// kong.service.request changes are what the upstream gets and, as in Kong,
// what later kong.request.get_header calls see.
//
// Before routing, a request whose header does not fit nginx's default
// buffers (a line over 8 KiB, or more than 4 × 8 KiB) is answered 400, a
// request line over 8 KiB 414, as Kong does.
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
// upgrades, and a reload of kong.conf.
package kongemu
