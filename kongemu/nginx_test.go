package kongemu

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
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
