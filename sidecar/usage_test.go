package sidecar_test

import (
	"testing"
	"time"

	"github.com/keygate/keygate/sidecar"
)

// lastUsedAt moves after an allowed verification, not after a denied one,
// and is flushed in the background.
func TestLastUsedAt(t *testing.T) {
	t.Parallel()
	h := start(t, func(c *sidecar.Config) { c.UsageFlushInterval = 50 * time.Millisecond })
	used := h.create("ws_u", `{"name":"used","scopes":["a:b"]}`)
	idle := h.create("ws_u", `{"name":"idle","scopes":["a:b"]}`)
	if used.LastUsedAt != nil {
		t.Fatalf("new key has lastUsedAt %v", *used.LastUsedAt)
	}
	before := time.Now().Truncate(time.Second)
	if !h.verify(used.Secret, "", []string{"a:b"}).Allow {
		t.Fatal("denied")
	}
	if h.verify(idle.Secret, "", []string{"x:y"}).Allow { // denied: no use
		t.Fatal("allowed")
	}
	get := func(id string) keyObj {
		var k keyObj
		h.do("GET", "/web/v1/workspaces/ws_u/api-keys/"+id, "admin", "").data(t, &k)
		return k
	}
	deadline := time.Now().Add(3 * time.Second)
	for get(used.APIKeyID).LastUsedAt == nil {
		if time.Now().After(deadline) {
			t.Fatal("lastUsedAt never flushed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	at, err := time.Parse(time.RFC3339, *get(used.APIKeyID).LastUsedAt)
	if err != nil || at.Before(before) || at.After(time.Now()) {
		t.Fatalf("lastUsedAt %v %v", at, err)
	}
	time.Sleep(150 * time.Millisecond)
	if k := get(idle.APIKeyID); k.LastUsedAt != nil {
		t.Fatalf("denied key got lastUsedAt %v", *k.LastUsedAt)
	}
}

// Marks not yet flushed are written on shutdown.
func TestLastUsedAtFlushedOnShutdown(t *testing.T) {
	t.Parallel()
	h := start(t, func(c *sidecar.Config) { c.UsageFlushInterval = time.Hour })
	k := h.create("ws_u", `{"name":"used","scopes":["a:b"]}`)
	h.verify(k.Secret, "", []string{"a:b"})
	if err := h.srv.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	h2 := start(t, func(c *sidecar.Config) { c.Store = openBolt(t, h.db) })
	var got keyObj
	h2.do("GET", "/web/v1/workspaces/ws_u/api-keys/"+k.APIKeyID, "admin", "").data(t, &got)
	if got.LastUsedAt == nil {
		t.Fatal("lastUsedAt lost on shutdown")
	}
}
