package store_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/storetest"
)

func openBolt(t *testing.T) *store.Bolt {
	t.Helper()
	b, err := store.OpenBolt(filepath.Join(t.TempDir(), "sub", "keygate.db"), store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBoltConformance(t *testing.T) {
	t.Parallel()
	storetest.Exercise(t, func(t *testing.T) store.Store { return openBolt(t) })
}

func TestCachedConformance(t *testing.T) {
	t.Parallel()
	storetest.Exercise(t, func(t *testing.T) store.Store {
		c, err := store.NewCached(openBolt(t), store.CacheOptions{NumCounters: 1000, MaxCost: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		return c
	})
}

func TestBoltLockedByAnotherHandle(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "keygate.db")
	b, err := store.OpenBolt(path, store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	start := time.Now()
	_, err = store.OpenBolt(path, store.BoltOptions{LockTimeout: 200 * time.Millisecond})
	if err == nil || !contains(err.Error(), "locked by another process") || !contains(err.Error(), path) {
		t.Fatalf("second open: %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("lock wait took %s", time.Since(start))
	}
}

func TestBoltMaxSizeIsFull(t *testing.T) {
	t.Parallel()
	b, err := store.OpenBolt(filepath.Join(t.TempDir(), "k.db"), store.BoltOptions{MaxSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	var full bool
	for i := 0; i < 20000 && !full; i++ {
		k := &store.Key{ID: apikey.NewID(apikey.Live), WorkspaceID: "ws", Name: string(make([]byte, 100)), Scopes: []string{}, IPWhitelist: []string{}}
		err := b.Create(ctx, k, apikey.Hash(string(apikey.NewSecret(apikey.Live))), store.Event{EventID: "e" + k.ID, Action: store.ActionCreated})
		if errors.Is(err, store.ErrFull) {
			full = true
			if _, gerr := b.Get(ctx, "ws", k.ID); !errors.Is(gerr, store.ErrNotFound) {
				t.Fatalf("a create that failed for room left its key: %v", gerr)
			}
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if !full {
		t.Fatal("never reported full")
	}
	if err := b.Ready(ctx); err != nil {
		t.Fatalf("store not usable after full: %v", err)
	}
}

// A revoke racing a cache fill: the fill read before the revoke must not
// make the revoked key valid again.
func TestCachedNoResurrection(t *testing.T) {
	t.Parallel()
	c, err := store.NewCached(openBolt(t), store.CacheOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	for i := range 50 {
		secret := apikey.NewSecret(apikey.Live)
		k := &store.Key{ID: apikey.NewID(apikey.Live), WorkspaceID: "ws", Name: "n", Scopes: []string{}, IPWhitelist: []string{}}
		if err := c.Create(ctx, k, apikey.Hash(string(secret)), store.Event{EventID: "e" + k.ID, Action: store.ActionCreated}); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range 20 {
				c.Lookup(ctx, apikey.Hash(string(secret)))
			}
		}()
		if _, err := c.Revoke(ctx, "ws", k.ID, 1, store.Event{EventID: "r" + k.ID, Action: store.ActionRevoked}); err != nil {
			t.Fatal(err)
		}
		for range 5 {
			f, err := c.Lookup(ctx, apikey.Hash(string(secret)))
			if err != nil || !f.Revoked {
				t.Fatalf("round %d: revoked key looked up as %+v, %v", i, f, err)
			}
			time.Sleep(time.Millisecond)
		}
		<-done
		f, _ := c.Lookup(ctx, apikey.Hash(string(secret)))
		if !f.Revoked {
			t.Fatalf("round %d: resurrected after fills settled", i)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// Key records written before hashes were stored as base64 (an array of 32
// numbers) still read, and rewrite in the new form.
func TestSecretHashReadsBothForms(t *testing.T) {
	t.Parallel()
	h := apikey.Hash(apikey.NewSecret(apikey.Live).Reveal())
	var arr []string
	for _, b := range h {
		arr = append(arr, strconv.Itoa(int(b)))
	}
	for _, raw := range []string{
		`{"id":"x","secrets":[{"h":[` + strings.Join(arr, ",") + `],"u":5}]}`,
		`{"id":"x","secrets":[{"h":"` + base64.StdEncoding.EncodeToString(h[:]) + `","u":5}]}`,
	} {
		var k store.Key
		if err := json.Unmarshal([]byte(raw), &k); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		if len(k.Secrets) != 1 || [32]byte(k.Secrets[0].Hash) != h || k.Secrets[0].Until != 5 {
			t.Fatalf("%s → %+v", raw, k.Secrets)
		}
		out, _ := json.Marshal(k.Secrets[0])
		if !strings.Contains(string(out), `"h":"`+base64.StdEncoding.EncodeToString(h[:])+`"`) {
			t.Fatalf("rewritten as %s", out)
		}
	}
	var bad store.SecretRef
	if err := json.Unmarshal([]byte(`{"h":"c2hvcnQ="}`), &bad); err == nil {
		t.Fatal("short hash accepted")
	}
}

// A cache entry's use mark is claimed once a period and can be given back;
// its facts are rendered once, when they are read from the store.
func TestCachedEntryMarksAndRendered(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := openBolt(t)
	renders := 0
	render := func(f *apikey.Facts) []byte { renders++; return []byte(f.APIKeyID) }
	c, err := store.NewCached(b, store.CacheOptions{Render: render})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	k := &store.Key{ID: apikey.NewID(apikey.Live), WorkspaceID: "ws", Name: "k", Mode: apikey.Live, Scopes: []string{"a:b"}, CreatedAt: 1}
	h := apikey.Hash("entry test secret")
	if err := c.Create(ctx, k, h, store.Event{EventID: "e", Action: store.ActionCreated}); err != nil {
		t.Fatal(err)
	}
	e, err := c.Find(ctx, h)
	if err != nil || e.Facts.APIKeyID != k.ID {
		t.Fatalf("find: %+v %v", e, err)
	}
	if prev, first := e.MarkUsed(10); !first || prev != 0 {
		t.Fatalf("first mark: %d %v", prev, first)
	}
	if _, first := e.MarkUsed(10); first {
		t.Fatal("same period marked twice")
	}
	if _, first := e.MarkUsed(9); first {
		t.Fatal("an earlier period marked")
	}
	e.UnmarkUsed(10, 0) // the caller could not record it
	if prev, first := e.MarkUsed(10); !first || prev != 0 {
		t.Fatalf("after unmark: %d %v", prev, first)
	}
	e.MarkUsed(11)
	e.UnmarkUsed(10, 0) // a later period was claimed since: stays
	if _, first := e.MarkUsed(11); first {
		t.Fatal("unmark of an older period undid a later one")
	}
	if got := e.Rendered; got != k.ID || renders != 1 {
		t.Fatalf("rendered %q, %d times", got, renders)
	}
	c.Wait()
	for range 3 { // hits: the same entry, not rendered again
		if hit, err := c.Find(ctx, h); err != nil || hit != e || hit.Rendered != k.ID {
			t.Fatalf("hit: %p %v, want %p", hit, err, e)
		}
	}
	if renders != 1 {
		t.Fatalf("rendered %d times", renders)
	}
}
