package store

import (
	"context"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"unsafe"

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

// newEntry copies the facts whatever their shape — in each block size, and
// beyond the largest — into an entry that shares nothing with them and
// whose slices cannot be appended into the block.
func TestNewEntryCopiesEveryShape(t *testing.T) {
	t.Parallel()
	render := func(f *apikey.Facts) []byte { return []byte(`,"apiKeyId":"` + f.APIKeyID + `"`) }
	shapes := []struct{ scopes, ips int }{{0, 0}, {4, 2}, {5, 0}, {1, 3}, {8, 4}, {2, 10}, {8, 16}, {9, 0}, {0, 17}, {apikey.MaxScopes, apikey.MaxIPWhitelist}}
	for _, sh := range shapes {
		f := &apikey.Facts{APIKeyID: apikey.NewID(apikey.Test), WorkspaceID: "ws-" + strconv.Itoa(sh.scopes), Mode: apikey.Test, ExpiresAt: 1e9, Revoked: sh.ips%2 == 1}
		for i := range sh.scopes {
			f.Scopes = append(f.Scopes, "scope:"+strconv.Itoa(i))
		}
		for i := range sh.ips {
			f.IPWhitelist = append(f.IPWhitelist, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16))
		}
		want := *f
		want.Scopes = slices.Clone(f.Scopes)
		want.IPWhitelist = slices.Clone(f.IPWhitelist)
		h := apikey.Hash(f.APIKeyID)
		e, size := newEntry(f, h, 7, render)
		if e.hash != h || e.gen != 7 || e.Rendered != string(render(&want)) {
			t.Fatalf("%v: hash, generation or rendered answer wrong: %q", sh, e.Rendered)
		}
		if min := int64(unsafe.Sizeof(*e)) + int64(len(e.Rendered)+32*sh.ips+16*sh.scopes); size < min {
			t.Fatalf("%v: cost %d, below %d", sh, size, min)
		}
		if cap(e.Facts.Scopes) != sh.scopes || cap(e.Facts.IPWhitelist) != sh.ips {
			t.Fatalf("%v: slices not capped at their length: %d, %d", sh, cap(e.Facts.Scopes), cap(e.Facts.IPWhitelist))
		}
		// Scribble over the caller's facts: the entry keeps its own copy.
		for i := range f.Scopes {
			f.Scopes[i] = "changed"
		}
		for i := range f.IPWhitelist {
			f.IPWhitelist[i] = netip.Prefix{}
		}
		f.APIKeyID, f.WorkspaceID = "", ""
		got := e.Facts
		if sh.scopes == 0 { // nil or empty: the same facts
			got.Scopes = want.Scopes
		}
		if sh.ips == 0 {
			got.IPWhitelist = want.IPWhitelist
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%v: entry facts\n%+v\nwant\n%+v", sh, got, want)
		}
	}
	if e, _ := newEntry(&apikey.Facts{APIKeyID: "k"}, [32]byte{}, 0, nil); e.Rendered != "" || e.Facts.APIKeyID != "k" {
		t.Fatalf("without a Render: %+v", e)
	}
}
