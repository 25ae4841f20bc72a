package kongemu

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// nginx's header buffers (4 × 8k): a header line over 8 KiB, or more lines
// than the buffers hold, is answered 400 by Kong's error handler before
// any plugin runs; a request line over 8 KiB 414.
func TestNginxHeaderLimits(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	e := startEmu(t, fill(oneRouteYAML, "UPSTREAM", up.URL), nil)
	big := func(n int) string { return strings.Repeat("a", n) }
	for _, tc := range []struct {
		name   string
		path   string
		hdr    map[string]string
		status int
		msg    string
	}{
		// "X-Big: " + value + CRLF is 9 bytes more than the value.
		{name: "a header line of 8 KiB fits", hdr: map[string]string{"X-Big": big(8192 - 9)}, status: 200},
		{name: "a header line one byte over", hdr: map[string]string{"X-Big": big(8192 - 8)}, status: 400, msg: "Request header or cookie too large"},
		{name: "four 7 KB lines fit", hdr: map[string]string{"A1": big(7000), "A2": big(7000), "A3": big(7000), "A4": big(7000)}, status: 200},
		{name: "five 7 KB lines do not", hdr: map[string]string{"A1": big(7000), "A2": big(7000), "A3": big(7000), "A4": big(7000), "A5": big(7000)},
			status: 400, msg: "Request header or cookie too large"},
		{name: "a request line over 8 KiB", path: "/" + big(8200), status: 414, msg: "URI too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hits := up.hits.Load()
			path := tc.path
			if path == "" {
				path = "/"
			}
			res := e.do(t, "GET", path, tc.hdr)
			if res.status != tc.status {
				t.Fatalf("status %d, want %d: %.200s", res.status, tc.status, res.body)
			}
			if tc.status == 200 {
				return
			}
			var body map[string]string
			if err := json.Unmarshal(res.body, &body); err != nil || body["message"] != tc.msg {
				t.Errorf("body %s, want message %q", res.body, tc.msg)
			}
			if res.header.Get(HeaderPDKCalls) != "" {
				t.Errorf("the plugin ran (%s calls)", res.header.Get(HeaderPDKCalls))
			}
			if up.hits.Load() != hits {
				t.Errorf("the request reached the upstream")
			}
		})
	}
}

// Kong's underscores_in_headers on: X_Api_Key_Id reaches the plugin (its
// own name in get_headers, and get_header("x_api_key_id") finds it as
// nginx's $http_x_api_key_id) and the upstream.
func TestUnderscoresInHeaders(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	e := startEmu(t, fill(oneRouteYAML, "UPSTREAM", up.URL), nil)
	res := e.do(t, "GET", "/", map[string]string{"X-Test-Mode": "underscore", "X_Api_Key_Id": "forged"})
	if res.echo == nil {
		t.Fatalf("status %d: %s", res.status, res.body)
	}
	if got := res.echo.Header.Get("X-Seen-Underscore"); got != "forged|x_api_key_id" {
		t.Errorf("plugin saw %q, want get_header and get_headers to see x_api_key_id", got)
	}
	var upstreamSaw []string
	for k, v := range res.echo.Header {
		if strings.EqualFold(k, "X_Api_Key_Id") {
			upstreamSaw = append(upstreamSaw, v...)
		}
	}
	if len(upstreamSaw) != 1 || upstreamSaw[0] != "forged" {
		t.Errorf("upstream saw %q, want the underscore header passed on", upstreamSaw)
	}

	// Both spellings are one nginx variable.
	req, _ := http.NewRequest("GET", e.base+"/", nil)
	req.Header.Set("X-Test-Mode", "underscore")
	req.Header["X_api_key_id"] = []string{"a"}
	req.Header["X-Api-Key-Id"] = []string{"a"}
	res = doReq(t, http.DefaultClient, req)
	if got := res.echo.Header.Get("X-Seen-Underscore"); got != "a, a|x_api_key_id" {
		t.Errorf("plugin saw %q, want both lines joined", got)
	}
}

// Every reload (a changed kong.yml, or the signal of `kong reload`) gives
// each plugin entry a new __seq__: its next event starts a new instance
// and the old one is closed with cmd_close_instance, as Kong's
// plugins_iterator and plugin_servers do on every configuration change.
func TestReloadStartsNewInstances(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	yml := fill(`_format_version: "3.0"
services:
- name: s
  url: UPSTREAM
  routes: [{name: r, paths: [/]}]
  plugins: [{name: testplugin, config: {tag: TAG}}]
`, "UPSTREAM", up.URL)
	e := startEmu(t, fill(yml, "TAG", "one"), func(c *Config) { c.WatchInterval = 50 * time.Millisecond })
	seen := func() string {
		t.Helper()
		res := e.do(t, "GET", "/", map[string]string{"X-Test-Mode": "seq"})
		if res.echo == nil {
			t.Fatalf("status %d: %s", res.status, res.body)
		}
		return res.echo.Header.Get("X-Plugin-Seq")
	}
	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for got := seen(); got != want; got = seen() {
			if time.Now().After(deadline) {
				t.Fatalf("plugin saw %q, want %q; logs:\n%s", got, want, e.logs)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("one/1")

	// A changed file.
	if err := os.WriteFile(e.yml, []byte(fill(yml, "TAG", "two")), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor("two/2")
	if !strings.Contains(e.logs.String(), `msg="plugin instance closed" instance_id=1 err=<nil>`) {
		t.Errorf("instance 1 not closed:\n%s", e.logs)
	}

	// The signal, with the same file: still a new instance.
	e.reload <- struct{}{}
	waitFor("two/3")
	if !strings.Contains(e.logs.String(), `msg="plugin instance closed" instance_id=2 err=<nil>`) {
		t.Errorf("instance 2 not closed:\n%s", e.logs)
	}

	// A config that does not load keeps the running one.
	if err := os.WriteFile(e.yml, []byte("_format_version: \"3.0\"\nservices: [{name: s, url: nope://x}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(e.logs.String(), "reload failed") {
		if time.Now().After(deadline) {
			t.Fatalf("bad config not reported:\n%s", e.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := seen(); got != "two/3" {
		t.Errorf("after a bad reload the plugin saw %q, want two/3", got)
	}
}
