package sidecar_test

import (
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
)

// The owner console is served from the binary with strict security headers,
// only its own files, and no way to run inline or foreign code.
func TestConsoleServed(t *testing.T) {
	h := start(t)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(method, path string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, h.base+path, nil)
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}
	secure := func(path string, res *http.Response) {
		t.Helper()
		want := map[string]string{
			"X-Content-Type-Options": "nosniff",
			"Referrer-Policy":        "no-referrer",
			"Cache-Control":          "no-store",
			"X-Frame-Options":        "DENY",
		}
		for k, v := range want {
			if got := res.Header.Get(k); got != v {
				t.Errorf("%s: %s = %q, want %q", path, k, got, v)
			}
		}
		csp := res.Header.Get("Content-Security-Policy")
		for _, d := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "object-src 'none'", "frame-ancestors 'none'", "base-uri 'none'"} {
			if !strings.Contains(csp, d+";") && !strings.HasSuffix(csp, d) {
				t.Errorf("%s: CSP %q lacks %q", path, csp, d)
			}
		}
		if strings.Contains(csp, "unsafe-") || strings.Contains(csp, "*") || strings.Contains(csp, "http") {
			t.Errorf("%s: CSP %q is not strict", path, csp)
		}
	}

	for _, tc := range []struct{ path, ctype, contains string }{
		{"/console/", "text/html; charset=utf-8", `<script src="console.js" defer></script>`},
		{"/console/index.html", "text/html; charset=utf-8", "<dialog id=\"secret-dialog\""},
		{"/console/console.js", "text/javascript; charset=utf-8", "history.replaceState"},
		{"/console/console.css", "text/css; charset=utf-8", "@media"},
	} {
		res, body := get("GET", tc.path)
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != tc.ctype || !strings.Contains(body, tc.contains) {
			t.Fatalf("GET %s: %d %q %.80q", tc.path, res.StatusCode, res.Header.Get("Content-Type"), body)
		}
		secure(tc.path, res)
		res, body = get("HEAD", tc.path)
		if res.StatusCode != 200 || body != "" {
			t.Fatalf("HEAD %s: %d %q", tc.path, res.StatusCode, body)
		}
	}

	res, _ := get("GET", "/console")
	if res.StatusCode != 301 || res.Header.Get("Location") != "console/" {
		t.Fatalf("GET /console: %d Location %q", res.StatusCode, res.Header.Get("Location"))
	}
	secure("/console", res)
	for _, p := range []string{"/console/nope.js", "/console/../server.go", "/console/console/index.html", "/consolex"} {
		res, body := get("GET", p)
		if res.StatusCode != 404 || !strings.Contains(body, `"code":"4040"`) {
			t.Fatalf("GET %s: %d %.200s", p, res.StatusCode, body)
		}
	}
	res, body := get("POST", "/console/")
	if res.StatusCode != 405 || res.Header.Get("Allow") != "GET, HEAD" || !strings.Contains(body, `"code":"4050"`) {
		t.Fatalf("POST /console/: %d %v %s", res.StatusCode, res.Header, body)
	}
	secure("POST /console/", res)
}

// The page's own files carry no inline script or style, no event-handler
// attributes and no external resources, so the strict CSP holds.
func TestConsoleFilesSelfContained(t *testing.T) {
	html, err := os.ReadFile("console/index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range regexp.MustCompile(`(?i)<script[^>]*>`).FindAllString(string(html), -1) {
		if !strings.Contains(tag, ` src="`) {
			t.Errorf("index.html: inline script %s", tag)
		}
	}
	for _, re := range []string{`(?i)<style`, `(?i)\sstyle=`, `(?i)\son[a-z]+=`, `(?i)javascript:`} {
		if m := regexp.MustCompile(re).FindString(string(html)); m != "" {
			t.Errorf("index.html: %q matches %s", m, re)
		}
	}
	for _, f := range []string{"console/index.html", "console/console.js", "console/console.css"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if m := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/|@import|url\(`).FindString(string(b)); m != "" {
			t.Errorf("%s refers to an external resource: %q", f, m)
		}
	}
	js, _ := os.ReadFile("console/console.js")
	for _, bad := range []string{"localStorage", "innerHTML", "outerHTML", "eval(", "new Function", "document.write"} {
		if strings.Contains(string(js), bad) {
			t.Errorf("console.js uses %s", bad)
		}
	}
}
