package plugin

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/internal/envelope"
)

// TestTooManyHeaders: Kong passes only the first MaxHeaders header lines,
// so a request with that many is refused (400/4000, 2 calls) on both roles
// instead of being decided on part of it; one line fewer is decided.
func TestTooManyHeaders(t *testing.T) {
	t.Parallel()
	addr, accepted := silentListener(t)
	many := func(n int, base http.Header) http.Header {
		h := http.Header{}
		for k, v := range base {
			h[k] = v
		}
		for i := range n {
			h.Set(fmt.Sprintf("X-Filler-%04d", i), "v")
		}
		return h
	}
	key := http.Header{"X-Api-Key": {apikey.NewSecret(apikey.Live).Reveal()}, "X-Api-Key-2": {"x"}}
	tooMany := func(e *kongEnv) {
		t.Helper()
		body := string(e.ClientRes.Body)
		if e.ClientRes.Status != 400 || !strings.Contains(body, `"code":"4000"`) || !strings.Contains(body, "too many request headers") {
			t.Errorf("got %d %s, want 400/4000 too many request headers", e.ClientRes.Status, body)
		}
		wantCalls(t, e, pdkGetHeaders, pdkExit)
	}
	// The key header and X-Api-Key-2 are 2 lines (go-pdk's test request
	// has no Host line).
	tooMany(serve(t, enforceConfig("http://"+addr), keyRequest(many(MaxHeaders-2, key)), ""))
	tooMany(serve(t, manageConfig(), manageRequest("Bearer x", "/web/v1/workspaces/ws1/api-keys", "code-partner", many(MaxHeaders, nil)), ""))
	if accepted.Load() != 0 {
		t.Error("the sidecar was asked")
	}
	// One header line fewer is an ordinary request (here: a bad key).
	e := serve(t, enforceConfig("http://"+addr), keyRequest(many(MaxHeaders-3, http.Header{"X-Api-Key": {"sk_live_bad"}, "X-Api-Key-2": {"x"}})), "")
	wantReject(t, e, envelope.InvalidKey)
}
