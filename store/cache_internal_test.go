package store

import (
	"context"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
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
// beyond the largest — into an entry that shares nothing with them, in two
// allocations for a shape that fits a block: the block and one string that
// every string of the entry is a part of. Its slices cannot be appended
// into the block, nil stays nil, and its cost is what it allocated.
func TestNewEntryCopiesEveryShape(t *testing.T) { // not parallel: AllocsPerRun
	block := func(ns, ni int) int64 {
		switch {
		case ns <= 4 && ni <= 2:
			return int64(unsafe.Sizeof(entrySmall{}))
		case ns <= 8 && ni <= 4:
			return int64(unsafe.Sizeof(entryMedium{}))
		case ns <= 8 && ni <= 16:
			return int64(unsafe.Sizeof(entryLarge{}))
		}
		return int64(unsafe.Sizeof(Entry{})) + int64(16*ns+32*ni) // no block: three allocations and the string
	}
	type shape struct {
		scopes, ips int
		empty       bool // non-nil empty slices where there are none
		noRender    bool
	}
	shapes := []shape{{0, 0, false, false}, {0, 0, true, false}, {4, 2, false, false}, {5, 0, false, false}, {1, 3, false, true},
		{8, 4, false, false}, {2, 10, false, false}, {8, 16, false, true}, {9, 0, true, false}, {0, 17, false, false},
		{apikey.MaxScopes, apikey.MaxIPWhitelist, false, false}}
	for _, sh := range shapes {
		f := &apikey.Facts{APIKeyID: apikey.NewID(apikey.Test), WorkspaceID: "ws-" + strconv.Itoa(sh.scopes), Mode: apikey.Test, ExpiresAt: 1e9, Revoked: sh.ips%2 == 1}
		if sh.empty {
			f.Scopes, f.IPWhitelist = []string{}, []netip.Prefix{}
		}
		for i := range sh.scopes {
			f.Scopes = append(f.Scopes, strings.Repeat("s", i%3)) // "" too: a part of length 0
		}
		for i := range sh.ips {
			f.IPWhitelist = append(f.IPWhitelist, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16))
		}
		want := *f
		want.Scopes = slices.Clone(f.Scopes)
		want.IPWhitelist = slices.Clone(f.IPWhitelist)
		var buf []byte // render's answer, the caller's to reuse
		render := func(f *apikey.Facts) []byte {
			buf = append(buf[:0], `,"apiKeyId":"`+f.APIKeyID+`"`...)
			return buf
		}
		wantRendered := `,"apiKeyId":"` + f.APIKeyID + `"`
		if sh.noRender {
			render, wantRendered = nil, ""
		}
		h := apikey.Hash(f.APIKeyID)
		e, size := newEntry(f, h, 7, render)
		clear(buf)
		if e.hash != h || e.gen != 7 || e.Rendered != wantRendered {
			t.Fatalf("%+v: hash, generation or rendered answer wrong: %q", sh, e.Rendered)
		}
		strs := len(wantRendered) + len(f.APIKeyID) + len(f.WorkspaceID)
		for _, sc := range f.Scopes {
			strs += len(sc)
		}
		if want := block(sh.scopes, sh.ips) + int64(strs); size != want {
			t.Fatalf("%+v: cost %d, want %d", sh, size, want)
		}
		if cap(e.Facts.Scopes) != sh.scopes || cap(e.Facts.IPWhitelist) != sh.ips {
			t.Fatalf("%+v: slices not capped at their length: %d, %d", sh, cap(e.Facts.Scopes), cap(e.Facts.IPWhitelist))
		}
		// The strings are consecutive parts of one: scope names, answer, ids.
		var end uintptr
		for _, p := range append(slices.Clone(e.Facts.Scopes), e.Rendered, e.Facts.APIKeyID, e.Facts.WorkspaceID) {
			if len(p) == 0 {
				continue
			}
			start := uintptr(unsafe.Pointer(unsafe.StringData(p)))
			if end != 0 && start != end {
				t.Fatalf("%+v: %q does not follow the part before it", sh, p)
			}
			end = start + uintptr(len(p))
		}
		// Scribble over the caller's facts: the entry keeps its own copy.
		for i := range f.Scopes {
			f.Scopes[i] = "changed"
		}
		for i := range f.IPWhitelist {
			f.IPWhitelist[i] = netip.Prefix{}
		}
		if !reflect.DeepEqual(e.Facts, want) { // DeepEqual tells nil from empty
			t.Fatalf("%+v: entry facts\n%+v\nwant\n%+v", sh, e.Facts, want)
		}
		if sh.scopes <= 8 && sh.ips <= 16 {
			g := want
			if n := testing.AllocsPerRun(20, func() { newEntry(&g, h, 7, nil) }); n != 2 {
				t.Fatalf("%+v: %v allocations, want 2", sh, n)
			}
		}
	}
}
