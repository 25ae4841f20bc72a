package store

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/keygate/keygate/internal/apikey"
)

// The table of hot entries: a ristretto hit puts the entry in its slot, a
// fill does not; the slot is emptied when ristretto lets the entry go; a
// revoke makes the slot's entry stale at once.
func TestCachedHotTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, err := OpenBolt(filepath.Join(t.TempDir(), "k.db"), BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCached(b, CacheOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	k := &Key{ID: apikey.NewID(apikey.Live), WorkspaceID: "ws", Name: "k", Mode: apikey.Live, Scopes: []string{}, CreatedAt: 1}
	h := apikey.Hash("hot table test secret")
	if err := c.Create(ctx, k, h, Event{EventID: "e", Action: ActionCreated}); err != nil {
		t.Fatal(err)
	}
	slot := &c.hot[hotSlot(&h)]
	filled, err := c.Find(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	c.Wait()
	if slot.Load() != nil {
		t.Fatal("a fill entered the table")
	}
	if e, err := c.Find(ctx, h); err != nil || e != filled {
		t.Fatalf("ristretto hit: %p %v, want %p", e, err, filled)
	}
	if slot.Load() != filled {
		t.Fatal("a ristretto hit did not enter the table")
	}
	for range 100 { // served from the table, sometimes reported to ristretto
		if e, err := c.Find(ctx, h); err != nil || e != filled {
			t.Fatalf("table hit: %p %v", e, err)
		}
	}

	c.cache.Del(cacheKey(&h)) // ristretto lets it go: so does the table
	c.Wait()
	if slot.Load() != nil {
		t.Fatal("the table kept an entry ristretto dropped")
	}
	again, err := c.Find(ctx, h) // a miss: read again
	if err != nil || again == filled {
		t.Fatalf("after the drop: %p %v", again, err)
	}
	c.Wait()
	c.Find(ctx, h)
	if slot.Load() != again {
		t.Fatal("the new entry did not enter the table")
	}

	if _, err := c.Revoke(ctx, "ws", k.ID, 5, Event{EventID: "r", Action: ActionRevoked}); err != nil {
		t.Fatal(err)
	}
	f, err := c.Find(ctx, h)
	if err != nil || !f.Facts.Revoked {
		t.Fatalf("after revoke the table answered %+v, %v", f, err)
	}

	// Another key whose hash has the same slot takes it over.
	other := h
	other[0] ^= 0xff // another ristretto key, the same slot
	k2 := &Key{ID: apikey.NewID(apikey.Live), WorkspaceID: "ws", Name: "k2", Mode: apikey.Live, Scopes: []string{}, CreatedAt: 1}
	if err := c.Create(ctx, k2, other, Event{EventID: "e2", Action: ActionCreated}); err != nil {
		t.Fatal(err)
	}
	c.Find(ctx, other)
	c.Wait()
	e2, _ := c.Find(ctx, other)
	if slot.Load() != e2 || e2.Facts.APIKeyID != k2.ID {
		t.Fatal("a hit of another key of the slot did not take it")
	}
	if e, err := c.Find(ctx, h); err != nil || e.Facts.APIKeyID != k.ID || !e.Facts.Revoked {
		t.Fatalf("the first key after losing its slot: %+v %v", e, err)
	}
}
