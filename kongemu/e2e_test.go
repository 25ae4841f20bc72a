package kongemu

import (
	"encoding/json"
	"fmt"
	"github.com/keygate/keygate/kongemu/kongemutest"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const mainYAML = `_format_version: "3.0"
services:
- name: echo
  url: UPSTREAM/base
  plugins:
  - name: testplugin
    config: {tag: svc}
  routes:
  - name: api
    paths: [/api]
  - name: api-v1
    paths: [/api/v1]
    plugins:
    - name: testplugin
      config: {tag: v1, flags: [a, b]}
  - name: post-only
    paths: [/api/v1/things]
    methods: [POST]
  - name: keep
    paths: [/keep]
    strip_path: false
- name: root
  url: UPSTREAM
  routes:
  - name: open
    paths: [/open]
- name: dead
  url: http://DEAD
  routes: [{name: dead, paths: [/dead]}]
- name: slow
  url: UPSTREAM
  read_timeout: 300
  routes: [{name: slow, paths: [/slow]}]
plugins:
- name: testplugin
  route: open
  enabled: false
  config: {tag: disabled}
`

func startMain(t *testing.T) (*emu, *upstream) {
	t.Helper()
	up := newUpstream(t)
	yml := fill(mainYAML, "UPSTREAM", up.URL, "DEAD", kongemutest.ClosedAddr(t))
	// log_level info: TestProxy reads the plugin's kong.log.info line.
	e := startEmu(t, yml, func(c *Config) { c.Kong = kongConf(t, "log_level = info") })
	return e, up
}

func TestProxy(t *testing.T) {
	e, up := startMain(t)

	tests := []struct {
		name      string
		method    string
		path      string
		hdr       map[string]string
		status    int
		wantPath  string // upstream path; "" when not proxied
		wantQuery string
		wantCalls string // X-Kongemu-Pdk-Calls; "" when the plugin does not run
	}{
		{name: "longest prefix wins", method: "GET", path: "/api/v1/x", status: 200, wantPath: "/base/x", wantCalls: "1"},
		{name: "shorter prefix", method: "GET", path: "/api/x?q=1", status: 200, wantPath: "/base/x", wantQuery: "q=1", wantCalls: "1"},
		{name: "plain prefix matches mid-segment", method: "GET", path: "/apix", status: 200, wantPath: "/base/x", wantCalls: "1"},
		{name: "method-restricted route matches POST", method: "POST", path: "/api/v1/things/7", status: 200, wantPath: "/base/7", wantCalls: "1"},
		{name: "method-restricted route skipped for GET", method: "GET", path: "/api/v1/things/7", status: 200, wantPath: "/base/things/7", wantCalls: "1"},
		{name: "strip_path exact prefix", method: "GET", path: "/api", status: 200, wantPath: "/base", wantCalls: "1"},
		{name: "strip_path false keeps the path", method: "GET", path: "/keep/a/b", status: 200, wantPath: "/base/keep/a/b", wantCalls: "1"},
		{name: "empty query kept", method: "GET", path: "/keep?", status: 200, wantPath: "/base/keep", wantCalls: "1"},
		{name: "disabled plugin does not run", method: "GET", path: "/open/a", status: 200, wantPath: "/a"},
		{name: "dot segments normalised", method: "GET", path: "/open/x/../y/", status: 200, wantPath: "/y/"},
		{name: "no route", method: "GET", path: "/nowhere", status: 404},
		{name: "upstream unreachable", method: "GET", path: "/dead", status: 502},
		{name: "upstream timeout", method: "GET", path: "/slow", hdr: map[string]string{"X-Sleep": "2s"}, status: 504},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := e.do(t, tc.method, tc.path, tc.hdr)
			if res.status != tc.status {
				t.Fatalf("status %d, want %d: %s", res.status, tc.status, res.body)
			}
			if got := res.header.Get(HeaderPDKCalls); got != tc.wantCalls {
				t.Errorf("%s = %q, want %q", HeaderPDKCalls, got, tc.wantCalls)
			}
			switch tc.status {
			case 404:
				assertJSON(t, res.body, "no Route matched with those values")
				return
			case 502:
				assertJSON(t, res.body, "An invalid response was received from the upstream server")
				return
			case 504:
				assertJSON(t, res.body, "The upstream server is timed out")
				return
			}
			if res.echo == nil {
				t.Fatalf("not proxied: %s", res.body)
			}
			if res.echo.Path != tc.wantPath || res.echo.Query != tc.wantQuery {
				t.Errorf("upstream got %q ? %q, want %q ? %q", res.echo.Path, res.echo.Query, tc.wantPath, tc.wantQuery)
			}
			if got := res.echo.Method; got != tc.method {
				t.Errorf("upstream method %q", got)
			}
		})
	}

	t.Run("instance config per plugin entry", func(t *testing.T) {
		for path, want := range map[string]string{"/api/v1/z": "v1|a,b", "/api/z": "svc|"} {
			res := e.do(t, "GET", path, map[string]string{"X-Test-Mode": "full"})
			if res.echo == nil {
				t.Fatalf("%s: status %d %s", path, res.status, res.body)
			}
			got := res.echo.Header.Get("X-Plugin-Tag") + "|" + res.echo.Header.Get("X-Plugin-Flags")
			if got != want {
				t.Errorf("%s: tag|flags %q, want %q", path, got, want)
			}
		}
	})

	t.Run("PDK calls reach upstream and response", func(t *testing.T) {
		req, _ := http.NewRequest("GET", e.base+"/api/v1/p/q?q=42&r=1", nil)
		req.Host = "Example.COM:8443"
		req.Header.Set("X-Test-Mode", "full")
		req.Header.Set("X-Remove-Me", "secret")
		req.Header.Add("X-Multi", "one")
		res := doReq(t, http.DefaultClient, req)
		if res.echo == nil {
			t.Fatalf("status %d: %s", res.status, res.body)
		}
		h := res.echo.Header
		checks := map[string]string{
			"X-Remove-Me":    "",
			"X-Seen-Headers": "one",
			"X-Seen-Host":    "example.com|Example.COM:8443",
			"X-Seen-Request": "GET /api/v1/p/q /api/v1/p/q?q=42&r=1 q=42&r=1 42 http",
			"X-Seen-Missing": "[]",
			"X-Seen-Cred":    "cred-1/cons-1",
			"X-Seen-Shared":  "shared-value",
			"X-Seen-Route":   "api-v1|true|" + stableID("service", "echo"),
			"X-Seen-Service": "echo|127.0.0.1|" + stableID("service", "echo"),
		}
		for k, want := range checks {
			if got := h.Get(k); got != want {
				t.Errorf("upstream %s = %q, want %q", k, got, want)
			}
		}
		if got := h.Values("X-Multi"); strings.Join(got, ",") != "one,two" {
			t.Errorf("X-Multi = %q, want one,two", got)
		}
		if got := res.header.Get("X-Resp-Plugin"); got != "yes" {
			t.Errorf("response X-Resp-Plugin = %q", got)
		}
		if got := res.echo.Host; got != strings.TrimPrefix(up.URL, "http://") {
			t.Errorf("upstream Host %q, want the service's", got)
		}
		want := "kong.request.get_header,kong.request.get_headers,kong.request.get_method,kong.request.get_path," +
			"kong.request.get_path_with_query,kong.request.get_raw_query,kong.request.get_query_arg," +
			"kong.request.get_host,kong.request.get_scheme,kong.request.get_header,kong.client.authenticate," +
			"kong.client.get_credential,kong.ctx.shared.set,kong.ctx.shared.get,kong.router.get_route," +
			"kong.router.get_service,kong.log.info,kong.service.request.clear_header," +
			"kong.service.request.add_header,kong.response.set_header,kong.service.request.set_headers"
		if got := res.header.Get(HeaderPDKMethods); got != want {
			t.Errorf("methods\n got %s\nwant %s", got, want)
		}
		if got := res.header.Get(HeaderPDKCalls); got != "21" {
			t.Errorf("calls %s, want 21", got)
		}
		if !strings.Contains(e.logs.String(), "hello from v1") {
			t.Errorf("kong.log.info line missing from logs")
		}
	})

	t.Run("exit ends the request", func(t *testing.T) {
		before := up.hits.Load()
		res := e.do(t, "GET", "/api/v1/x", map[string]string{"X-Test-Mode": "exit"})
		if res.status != 418 {
			t.Fatalf("status %d: %s", res.status, res.body)
		}
		if string(res.body) != `{"tag":"v1","why":"asked"}` {
			t.Errorf("body %s", res.body)
		}
		if got := res.header.Values("X-Exit"); strings.Join(got, ",") != "a,b" {
			t.Errorf("X-Exit %q", got)
		}
		if got := res.header.Get("Content-Type"); got != "application/json" {
			t.Errorf("Content-Type %q", got)
		}
		if got := res.header.Get(HeaderPDKMethods); got != "kong.request.get_header,kong.response.exit" {
			t.Errorf("methods %q", got)
		}
		if up.hits.Load() != before {
			t.Errorf("exit was proxied")
		}
	})

	t.Run("unsupported PDK method fails loudly", func(t *testing.T) {
		res := e.do(t, "GET", "/api/x", map[string]string{"X-Test-Mode": "unknown"})
		if res.status != 500 {
			t.Fatalf("status %d: %s", res.status, res.body)
		}
		var body map[string]string
		if err := json.Unmarshal(res.body, &body); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(body["kongemu_error"], "kong.client.load_consumer") {
			t.Errorf("body %s does not name the method", res.body)
		}
		if !strings.Contains(e.logs.String(), "method=kong.client.load_consumer") {
			t.Errorf("no log line names the method:\n%s", e.logs)
		}
		// The plugin keeps working afterwards.
		if res := e.do(t, "GET", "/api/x", nil); res.status != 200 {
			t.Errorf("next request: %d", res.status)
		}
	})

	t.Run("forwarded headers", func(t *testing.T) {
		res := e.do(t, "GET", "/api/v1/f", map[string]string{"X-Forwarded-For": "9.9.9.9", "X-Forwarded-Proto": "https"})
		if res.echo == nil {
			t.Fatalf("status %d", res.status)
		}
		_, port, _ := net.SplitHostPort(strings.TrimPrefix(e.base, "http://"))
		want := map[string]string{
			"X-Forwarded-For":    "9.9.9.9, 127.0.0.1",
			"X-Forwarded-Proto":  "http", // untrusted peer: the client's value is not kept
			"X-Forwarded-Host":   "127.0.0.1",
			"X-Forwarded-Port":   port,
			"X-Forwarded-Prefix": "/api/v1",
			"X-Forwarded-Path":   "/api/v1/f",
			"X-Real-Ip":          "127.0.0.1",
		}
		for k, v := range want {
			if got := res.echo.Header.Get(k); got != v {
				t.Errorf("%s = %q, want %q", k, got, v)
			}
		}
	})
}

func assertJSON(t *testing.T, body []byte, msg string) {
	t.Helper()
	var m map[string]string
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	if m["message"] != msg {
		t.Errorf("message %q, want %q", m["message"], msg)
	}
}

func TestEventTimeout(t *testing.T) {
	up := newUpstream(t)
	yml := fill(`_format_version: "3.0"
services:
- name: s
  url: UPSTREAM
  routes: [{name: r, paths: [/]}]
  plugins: [{name: testplugin, config: {sleep_ms: 10000}}]
`, "UPSTREAM", up.URL)
	e := startEmu(t, yml, func(c *Config) { c.EventTimeout = time.Second })
	start, hits := time.Now(), up.hits.Load()
	res := e.do(t, "GET", "/", map[string]string{"X-Test-Mode": "sleep"})
	if res.status != 500 {
		t.Fatalf("status %d: %s", res.status, res.body)
	}
	assertJSON(t, res.body, "An unexpected error occurred")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s, want about the 1s event timeout", d)
	}
	if up.hits.Load() != hits {
		t.Errorf("a timed-out event was proxied")
	}
	if res := e.do(t, "GET", "/", nil); res.status != 200 {
		t.Errorf("next request: %d", res.status)
	}
}

func TestForwardedIP(t *testing.T) {
	up := newUpstream(t)
	yml := fill(`_format_version: "3.0"
services:
- name: s
  url: UPSTREAM
  routes: [{name: r, paths: [/]}]
plugins:
- name: testplugin
`, "UPSTREAM", up.URL)

	type req struct {
		hdr      map[string]string
		wantIP   string
		wantPort string
	}
	configs := []struct {
		name string
		mod  func(*Config)
		reqs []req
	}{
		{name: "nobody trusted by default", mod: nil, reqs: []req{
			{hdr: map[string]string{"X-Forwarded-For": "1.2.3.4"}, wantIP: "127.0.0.1"},
		}},
		{name: "trusted peer, not recursive", mod: func(c *Config) {
			c.Kong = kongConf(t, "trusted_ips = 127.0.0.1,10.0.0.0/8\nreal_ip_header = X-Forwarded-For")
		}, reqs: []req{
			{hdr: map[string]string{"X-Forwarded-For": "1.2.3.4, 10.0.0.5"}, wantIP: "10.0.0.5", wantPort: "0"},
			{hdr: map[string]string{"X-Forwarded-For": "1.2.3.4:5555"}, wantIP: "1.2.3.4", wantPort: "5555"},
			{hdr: nil, wantIP: "127.0.0.1"},
			{hdr: map[string]string{"X-Forwarded-For": "garbage"}, wantIP: "127.0.0.1"},
		}},
		{name: "trusted peer, recursive", mod: func(c *Config) {
			c.Kong = kongConf(t, "trusted_ips = 127.0.0.1,10.0.0.0/8\nreal_ip_header = X-Forwarded-For\nreal_ip_recursive = on")
		}, reqs: []req{
			{hdr: map[string]string{"X-Forwarded-For": "1.2.3.4, 10.0.0.5"}, wantIP: "1.2.3.4"},
			{hdr: map[string]string{"X-Forwarded-For": "8.8.8.8, 1.2.3.4, 10.0.0.5, 10.0.0.6"}, wantIP: "1.2.3.4"},
			{hdr: map[string]string{"X-Forwarded-For": "10.0.0.7, 10.0.0.5"}, wantIP: "10.0.0.7"},
			{hdr: map[string]string{"X-Forwarded-For": "2001:db8::1, 10.0.0.5"}, wantIP: "2001:db8::1"},
		}},
		{name: "X-Real-IP is Kong's default header", mod: func(c *Config) {
			c.Kong = kongConf(t, "trusted_ips = 127.0.0.0/8")
		}, reqs: []req{
			{hdr: map[string]string{"X-Real-IP": "5.6.7.8", "X-Forwarded-For": "1.2.3.4"}, wantIP: "5.6.7.8"},
			{hdr: map[string]string{"X-Forwarded-For": "1.2.3.4"}, wantIP: "127.0.0.1"},
		}},
		{name: "a custom header", mod: func(c *Config) {
			c.Kong = kongConf(t, "trusted_ips = 127.0.0.0/8\nreal_ip_header = CF-Connecting-IP")
		}, reqs: []req{
			{hdr: map[string]string{"CF-Connecting-IP": "5.6.7.9", "X-Real-IP": "1.2.3.4"}, wantIP: "5.6.7.9"},
		}},
		{name: "peer not in trusted list", mod: func(c *Config) {
			c.Kong = kongConf(t, "trusted_ips = 10.0.0.0/8\nreal_ip_header = X-Forwarded-For")
		}, reqs: []req{
			{hdr: map[string]string{"X-Forwarded-For": "1.2.3.4"}, wantIP: "127.0.0.1"},
		}},
	}
	for _, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			t.Parallel()
			e := startEmu(t, yml, cfg.mod)
			for _, r := range cfg.reqs {
				hdr := map[string]string{"X-Test-Mode": "ips"}
				for k, v := range r.hdr {
					hdr[k] = v
				}
				res := e.do(t, "GET", "/x", hdr)
				if res.echo == nil {
					t.Fatalf("status %d: %s", res.status, res.body)
				}
				h := res.echo.Header
				if got := h.Get("X-Seen-Ip"); got != "127.0.0.1" {
					t.Errorf("%v: get_ip %q, want the peer", r.hdr, got)
				}
				if got := h.Get("X-Seen-Forwarded-Ip"); got != r.wantIP {
					t.Errorf("%v: get_forwarded_ip %q, want %q", r.hdr, got, r.wantIP)
				}
				if got := h.Get("X-Real-Ip"); got != r.wantIP {
					t.Errorf("%v: upstream X-Real-IP %q, want %q", r.hdr, got, r.wantIP)
				}
				if r.wantPort != "" && h.Get("X-Seen-Forwarded-Port") != r.wantPort {
					t.Errorf("%v: get_forwarded_port %q, want %q", r.hdr, h.Get("X-Seen-Forwarded-Port"), r.wantPort)
				}
				if r.wantIP == "127.0.0.1" && h.Get("X-Seen-Forwarded-Port") != h.Get("X-Seen-Port") {
					t.Errorf("%v: forwarded port %q differs from peer port %q", r.hdr, h.Get("X-Seen-Forwarded-Port"), h.Get("X-Seen-Port"))
				}
			}
		})
	}
}

func TestIPv6Peer(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	up := newUpstream(t)
	yml := fill(oneRouteYAML, "UPSTREAM", up.URL)
	e := startEmu(t, yml, func(c *Config) {
		c.Listener = ln
		c.Kong = kongConf(t, "trusted_ips = ::1/128\nreal_ip_header = X-Forwarded-For")
	})
	res := e.do(t, "GET", "/", map[string]string{"X-Test-Mode": "ips", "X-Forwarded-For": "2001:db8::7"})
	if res.echo == nil {
		t.Fatalf("status %d: %s", res.status, res.body)
	}
	if got := res.echo.Header.Get("X-Seen-Ip"); got != "::1" {
		t.Errorf("get_ip %q, want ::1", got)
	}
	if got := res.echo.Header.Get("X-Seen-Forwarded-Ip"); got != "2001:db8::7" {
		t.Errorf("get_forwarded_ip %q", got)
	}
	if got := res.echo.Header.Get("X-Forwarded-For"); got != "2001:db8::7, ::1" {
		t.Errorf("X-Forwarded-For %q", got)
	}
}

func TestPluginRestart(t *testing.T) {
	up := newUpstream(t)
	yml := fill(`_format_version: "3.0"
services:
- name: s
  url: UPSTREAM
  routes: [{name: r, paths: [/]}]
  plugins: [{name: testplugin, config: {tag: t1}}]
`, "UPSTREAM", up.URL)
	// log_level info: the plugin's own output is logged at INFO.
	e := startEmu(t, yml, func(c *Config) { c.Kong = kongConf(t, "log_level = info") })
	pid := func() int {
		t.Helper()
		res := e.do(t, "GET", "/", map[string]string{"X-Test-Mode": "pid"})
		if res.echo == nil {
			return 0
		}
		p, _ := strconv.Atoi(res.echo.Header.Get("X-Plugin-Pid"))
		return p
	}
	first := pid()
	if first == 0 {
		t.Fatal("no plugin pid")
	}
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		p := pid()
		if p != 0 && p != first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("plugin not restarted within 5s; logs:\n%s", e.logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(e.logs.String(), "external pluginserver 'testplugin' terminated") {
		t.Errorf("exit not logged")
	}
	if !strings.Contains(e.logs.String(), fmt.Sprintf("[testplugin:%d]", first)) {
		t.Errorf("plugin output not logged with [testplugin:PID]")
	}
}

func TestConcurrentRequests(t *testing.T) {
	e, _ := startMain(t)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for g := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 4 {
				path, tag := "/api/v1/c", "v1"
				if (g+i)%2 == 0 {
					path, tag = "/api/c", "svc"
				}
				req, _ := http.NewRequest("GET", e.base+path, nil)
				req.Header.Set("X-Test-Mode", "full")
				req.Header.Set("X-Multi", strconv.Itoa(g))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					errs <- err
					return
				}
				var got echoed
				err = json.NewDecoder(resp.Body).Decode(&got)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					errs <- fmt.Errorf("status %d: %v", resp.StatusCode, err)
					return
				}
				if got.Header.Get("X-Plugin-Tag") != tag || got.Header.Get("X-Seen-Headers") != strconv.Itoa(g) {
					errs <- fmt.Errorf("crossed wires: tag %q seen %q, want %q %d",
						got.Header.Get("X-Plugin-Tag"), got.Header.Get("X-Seen-Headers"), tag, g)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestStartupErrors(t *testing.T) {
	up := newUpstream(t)
	dir := t.TempDir()
	alias := filepath.Join(dir, "alias")
	if err := os.Symlink(pluginBin, alias); err != nil {
		t.Fatal(err)
	}
	badDump := filepath.Join(dir, "baddump")
	if err := os.WriteFile(badDump, []byte("#!/bin/sh\necho '{\"Protocol\":\"MsgPack:2\",\"Plugins\":[]}'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	good := fill(`_format_version: "3.0"
services:
- name: s
  url: UPSTREAM
  routes: [{name: r, paths: [/]}]
`, "UPSTREAM", up.URL)
	tests := []struct {
		name    string
		yml     string
		plugin  string
		conf    string
		wantErr string
	}{
		{name: "unknown plugin name", yml: good + "plugins: [{name: rate-limiting}]\n", wantErr: `plugin "rate-limiting" is not supported`},
		{name: "unknown config field", yml: good + "plugins: [{name: testplugin, config: {nope: 1}}]\n", wantErr: "config.nope: unknown field"},
		{name: "unsupported route key", yml: fill(good, "paths: [/]", "paths: [/], hosts: [a.example]"), wantErr: "hosts"},
		{name: "wrong protocol in dump", yml: good, plugin: badDump, wantErr: "MsgPack:2"},
		{name: "missing plugin binary", yml: good, plugin: filepath.Join(dir, "nope"), wantErr: "query command"},
		{name: "plugin not in plugins", yml: good, conf: "pluginserver_names = alias\npluginserver_alias_start_cmd = ALIAS\npluginserver_alias_query_cmd = ALIAS -dump",
			wantErr: "plugin \"testplugin\" not enabled"},
		{name: "no query command", yml: good, conf: "plugins = bundled,x\npluginserver_names = x-y\npluginserver_x_y_start_cmd = ALIAS",
			wantErr: "query_command undefined for pluginserver x-y"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := tryStartEmu(t, tc.yml, func(c *Config) {
				if tc.plugin != "" {
					c.PluginPath = tc.plugin
				}
				if tc.conf != "" {
					c.PluginPath = ""
					c.Kong = kongConf(t, strings.ReplaceAll(tc.conf, "ALIAS", alias))
				}
			})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

// oneRouteYAML: one service and route, the test plugin with its defaults.
const oneRouteYAML = `_format_version: "3.0"
services:
- name: s
  url: UPSTREAM
  routes: [{name: r, paths: [/]}]
  plugins: [{name: testplugin}]
`

func TestGracefulStopStopsPlugin(t *testing.T) {
	up := newUpstream(t)
	yml := fill(oneRouteYAML, "UPSTREAM", up.URL)
	var pid int
	t.Run("run", func(t *testing.T) {
		e := startEmu(t, yml, nil)
		res := e.do(t, "GET", "/", map[string]string{"X-Test-Mode": "pid"})
		pid, _ = strconv.Atoi(res.echo.Header.Get("X-Plugin-Pid"))
	}) // cleanup cancels Run and waits for it
	if pid == 0 {
		t.Fatal("no pid")
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("plugin process %d still alive after Run returned", pid)
	}
}

// kongemu's own HTTP limits: a client that trickles its headers is cut off
// after ReadHeaderTimeout, and headers over MaxHeaderBytes are refused with
// 431; neither reaches the plugin or the upstream, and the next request is
// served.
func TestServerLimits(t *testing.T) {
	up := newUpstream(t)
	yml := fill(oneRouteYAML, "UPSTREAM", up.URL)
	e := startEmu(t, yml, func(c *Config) {
		c.ReadHeaderTimeout = 300 * time.Millisecond
		c.MaxHeaderBytes = 4 << 10
	})
	hits := up.hits.Load()
	addr := strings.TrimPrefix(e.base, "http://")

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	begin := time.Now()
	conn.Write([]byte("GET / HTTP/1.1\r\nHost: kong\r\n"))
	closed := make(chan struct{})
	go func() {
		var b [512]byte
		for {
			if _, err := conn.Read(b[:]); err != nil {
				close(closed)
				return
			}
		}
	}()
	trickled := false
	for range 50 { // one header byte every 100 ms: never a whole request
		select {
		case <-closed:
			trickled = true
		case <-time.After(100 * time.Millisecond):
			conn.Write([]byte("X"))
			continue
		}
		break
	}
	if !trickled {
		t.Fatal("a client trickling its headers was never cut off")
	}
	if d := time.Since(begin); d > 3*time.Second {
		t.Fatalf("cut off only after %s", d)
	}

	res := e.do(t, "GET", "/", map[string]string{"X-Big": strings.Repeat("a", 8<<10)})
	if res.status != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("oversized headers answered %d, want 431", res.status)
	}
	if up.hits.Load() != hits {
		t.Fatal("a request over the limits reached the upstream")
	}
	if res := e.do(t, "GET", "/", nil); res.status != 200 || up.hits.Load() != hits+1 {
		t.Fatalf("next request: %d", res.status)
	}
}

// Kong's process.lua respawns a dead plugin server at most once a second
// (next_spawn = ngx.now() + 1): killed as soon as it starts, the plugin
// is started again no sooner than a second after its last start.
func TestPluginRestartRate(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	dir := shortTempDir(t)
	starts := filepath.Join(dir, "starts")
	script := filepath.Join(dir, "wrap")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ndate +%s%N >> "+starts+"\nexec "+pluginBin+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := fill("plugins = bundled,testplugin\nprefix = DIR\npluginserver_names = testplugin\n"+
		"pluginserver_testplugin_start_cmd = WRAP -kong-prefix DIR\npluginserver_testplugin_query_cmd = BIN -dump\n",
		"DIR", dir, "WRAP", script, "BIN", pluginBin)
	e := startEmu(t, fill(oneRouteYAML, "UPSTREAM", up.URL), func(c *Config) { c.PluginPath = ""; c.Kong = kongConf(t, conf) })
	deadline := time.Now().Add(3500 * time.Millisecond)
	killed := map[int]bool{}
	for time.Now().Before(deadline) {
		res := e.do(t, "GET", "/", map[string]string{"X-Test-Mode": "pid"})
		if res.echo != nil {
			if pid, _ := strconv.Atoi(res.echo.Header.Get("X-Plugin-Pid")); pid != 0 && !killed[pid] {
				killed[pid] = true
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, err := os.ReadFile(starts)
	if err != nil {
		t.Fatal(err)
	}
	var last int64
	lines := strings.Fields(string(b))
	for i, l := range lines {
		ns, _ := strconv.ParseInt(l, 10, 64)
		// The stamps are taken by the wrapper after the shell started,
		// which may lag the spawn by a few hundred ms on a loaded machine;
		// without the bound a restart follows a kill within milliseconds.
		if i > 0 && time.Duration(ns-last) < 500*time.Millisecond {
			t.Errorf("start %d came %s after the one before", i, time.Duration(ns-last))
		}
		last = ns
	}
	if len(lines) < 2 {
		t.Errorf("%d starts in 3.5 s of killing, want it restarted", len(lines))
	}
}
