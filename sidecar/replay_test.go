package sidecar_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/envelope"
	"github.com/keygate/keygate/internal/identity"
	"github.com/keygate/keygate/sidecar"
)

func ownerAssertion(t *testing.T, method, path string, now time.Time, ttl time.Duration) string {
	t.Helper()
	tok, err := identity.Sign(gwSecret, identity.Claims{Subject: "u", WorkspaceID: "ws_r", Role: identity.RoleOwner,
		Portal: "PUBLIC", RequestID: "r", Path: path, Method: method}, now, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// An assertion is accepted once; a list replayed is 401 like a create.
func TestAssertionReplayRefused(t *testing.T) {
	t.Parallel()
	h := start(t)
	const path = "/web/v1/workspaces/ws_r/api-keys"
	create := ownerAssertion(t, "POST", path, time.Now(), time.Minute)
	r := h.do("POST", path, "assert:"+create, `{"name":"once","scopes":["orders:read"]}`)
	h.expect(r, envelope.OK)
	r = h.do("POST", path, "assert:"+create, `{"name":"once","scopes":["orders:read"]}`)
	h.expect(r, envelope.Unauthorized)
	list := ownerAssertion(t, "GET", path, time.Now(), time.Minute)
	h.expect(h.do("GET", path, "assert:"+list, ""), envelope.OK)
	h.expect(h.do("GET", path, "assert:"+list, ""), envelope.Unauthorized)
	var page struct{ Items []map[string]any }
	r = h.do("GET", path, "admin", "")
	r.data(t, &page)
	if len(page.Items) != 1 {
		t.Fatalf("%d keys after a replayed create, want 1", len(page.Items))
	}
	if !strings.Contains(h.logs.String(), "identity assertion replayed") {
		t.Fatal("the replay is not logged")
	}
	if strings.Contains(h.logs.String(), create) {
		t.Fatal("the assertion is in the log")
	}
}

// The memory of assertion ids is bounded: full of live ids, the sidecar
// refuses new assertions with 503/5030 (fail closed) rather than forget an
// id; once they expire, it takes new ones again. The admin token is not
// affected.
func TestAssertionMemoryFullFailsClosed(t *testing.T) {
	t.Parallel()
	h := start(t, func(c *sidecar.Config) { c.MaxAssertions = 2 })
	const path = "/web/v1/workspaces/ws_r/api-keys"
	// Two live ids, forgotten 1–2 s from now (exp + leeway).
	start := time.Now().Add(-identity.Leeway - 58*time.Second)
	for range 2 {
		h.expect(h.do("GET", path, "assert:"+ownerAssertion(t, "GET", path, start, time.Minute), ""), envelope.OK)
	}
	h.expect(h.do("GET", path, "assert:"+ownerAssertion(t, "GET", path, time.Now(), time.Minute), ""), envelope.Unavailable)
	h.expect(h.do("GET", path, "admin", ""), envelope.OK)
	time.Sleep(3100 * time.Millisecond) // the two expire; the next sweep may run
	h.expect(h.do("GET", path, "assert:"+ownerAssertion(t, "GET", path, time.Now(), time.Minute), ""), envelope.OK)
}
