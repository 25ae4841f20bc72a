package sidecar_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/apikey"
)

// TestMetricsExposition: /metrics carries the Go runtime and process
// collectors operators expect beside keygate's series, counts what
// happened (every code present from the start), and speaks OpenMetrics to
// a scraper that asks for it.
func TestMetricsExposition(t *testing.T) {
	t.Parallel()
	h := start(t)
	h.verify(apikey.NewSecret(apikey.Live).Reveal(), "", []string{"a:b"})
	m := h.do("GET", "/metrics", "", "")
	for _, want := range []string{
		"\ngo_goroutines ", "\ngo_gc_duration_seconds{", "\nprocess_cpu_seconds_total ", "\nprocess_resident_memory_bytes ",
		"\nkeygate_verify_total{code=\"4012\"} 1\n", "\nkeygate_verify_total{code=\"2000\"} 0\n",
		"\nkeygate_store_seconds_bucket{op=\"lookup\",le=\"1e-05\"} ", "\nkeygate_push_subscribers 0\n",
	} {
		if !strings.Contains(string(m.raw), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	req, _ := http.NewRequest("GET", h.base+"/metrics", nil)
	req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") || !strings.HasSuffix(string(body), "# EOF\n") {
		t.Fatalf("OpenMetrics asked: %s, body ends %q", ct, body[max(0, len(body)-20):])
	}
}
