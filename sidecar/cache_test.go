package sidecar

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/storetest"
)

func testBolt(t testing.TB) *store.Bolt {
	t.Helper()
	b, err := store.OpenBolt(filepath.Join(t.TempDir(), "k.db"), store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testCache(t testing.TB, s store.Store, o CacheOptions) *cache {
	t.Helper()
	c, err := newCache(s, o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The cache is a store like any other: the conformance suite passes
// through it, on every backend.
func TestCacheConformance(t *testing.T) {
	t.Parallel()
	small := CacheOptions{NumCounters: 1000, MaxCost: 1 << 20}
	t.Run("bbolt", func(t *testing.T) {
		t.Parallel()
		storetest.Exercise(t, func(t *testing.T) store.Store { return testCache(t, testBolt(t), small) })
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		admin := storetest.PostgresURL(t, "KEYGATE_TEST_POSTGRES")
		storetest.Exercise(t, func(t *testing.T) store.Store {
			return testCache(t, openPostgres(t, storetest.FreshDatabase(t, admin)), small)
		})
	})
}

// A revoke racing a cache fill: the fill read before the revoke must not
// make the revoked key valid again.
func TestCacheNoResurrection(t *testing.T) {
	t.Parallel()
	c := testCache(t, testBolt(t), CacheOptions{})
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

// An entry's use mark is claimed once a period and can be given back; its
// answer is rendered once, when it is read from the store, and hits return
// that same entry.
func TestCacheEntryMarksAndRendered(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := testCache(t, testBolt(t), CacheOptions{})
	defer c.Close()
	k := &store.Key{ID: apikey.NewID(apikey.Live), WorkspaceID: "ws", Name: "k", Mode: apikey.Live, Scopes: []string{"a:b"}, CreatedAt: 1}
	h := apikey.Hash("entry test secret")
	if err := c.Create(ctx, k, h, store.Event{EventID: "e", Action: store.ActionCreated}); err != nil {
		t.Fatal(err)
	}
	e, err := c.find(ctx, h)
	if err != nil || e.facts.APIKeyID != k.ID {
		t.Fatalf("find: %+v %v", e, err)
	}
	if prev, first := e.markUsed(10); !first || prev != 0 {
		t.Fatalf("first mark: %d %v", prev, first)
	}
	if _, first := e.markUsed(10); first {
		t.Fatal("same period marked twice")
	}
	if _, first := e.markUsed(9); first {
		t.Fatal("an earlier period marked")
	}
	e.unmarkUsed(10, 0) // the caller could not record it
	if prev, first := e.markUsed(10); !first || prev != 0 {
		t.Fatalf("after unmark: %d %v", prev, first)
	}
	e.markUsed(11)
	e.unmarkUsed(10, 0) // a later period was claimed since: stays
	if _, first := e.markUsed(11); first {
		t.Fatal("unmark of an older period undid a later one")
	}
	want := `,"apiKeyId":"` + k.ID + `","workspaceId":"ws","mode":"LIVE","scopes":["a:b"],"ipWhitelist":[]`
	if e.rendered != want {
		t.Fatalf("rendered %s\nwant     %s", e.rendered, want)
	}
	c.wait()
	for range 3 { // hits: the same entry, not read or rendered again
		if hit, err := c.find(ctx, h); err != nil || hit != e {
			t.Fatalf("hit: %p %v, want %p", hit, err, e)
		}
	}
}

// The table of hot entries: a ristretto hit puts the entry in its slot, a
// fill does not; the slot is emptied when ristretto lets the entry go; a
// revoke makes the slot's entry stale at once.
func TestCacheHotTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := testCache(t, testBolt(t), CacheOptions{})
	defer c.Close()
	k := &store.Key{ID: apikey.NewID(apikey.Live), WorkspaceID: "ws", Name: "k", Mode: apikey.Live, Scopes: []string{}, CreatedAt: 1}
	h := apikey.Hash("hot table test secret")
	if err := c.Create(ctx, k, h, store.Event{EventID: "e", Action: store.ActionCreated}); err != nil {
		t.Fatal(err)
	}
	slot := &c.hot[hotSlot(&h)]
	filled, err := c.find(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	c.wait()
	if slot.Load() != nil {
		t.Fatal("a fill entered the table")
	}
	if e, err := c.find(ctx, h); err != nil || e != filled {
		t.Fatalf("ristretto hit: %p %v, want %p", e, err, filled)
	}
	if slot.Load() != filled {
		t.Fatal("a ristretto hit did not enter the table")
	}
	for range 100 { // served from the table, sometimes reported to ristretto
		if e, err := c.find(ctx, h); err != nil || e != filled {
			t.Fatalf("table hit: %p %v", e, err)
		}
	}

	c.ristretto.Del(cacheKey(&h)) // ristretto lets it go: so does the table
	c.wait()
	if slot.Load() != nil {
		t.Fatal("the table kept an entry ristretto dropped")
	}
	again, err := c.find(ctx, h) // a miss: read again
	if err != nil || again == filled {
		t.Fatalf("after the drop: %p %v", again, err)
	}
	c.wait()
	c.find(ctx, h)
	if slot.Load() != again {
		t.Fatal("the new entry did not enter the table")
	}

	if _, err := c.Revoke(ctx, "ws", k.ID, 5, store.Event{EventID: "r", Action: store.ActionRevoked}); err != nil {
		t.Fatal(err)
	}
	f, err := c.find(ctx, h)
	if err != nil || !f.facts.Revoked {
		t.Fatalf("after revoke the table answered %+v, %v", f, err)
	}

	// Another key whose hash has the same slot takes it over.
	other := h
	other[0] ^= 0xff // another ristretto key, the same slot
	k2 := &store.Key{ID: apikey.NewID(apikey.Live), WorkspaceID: "ws", Name: "k2", Mode: apikey.Live, Scopes: []string{}, CreatedAt: 1}
	if err := c.Create(ctx, k2, other, store.Event{EventID: "e2", Action: store.ActionCreated}); err != nil {
		t.Fatal(err)
	}
	c.find(ctx, other)
	c.wait()
	e2, _ := c.find(ctx, other)
	if slot.Load() != e2 || e2.facts.APIKeyID != k2.ID {
		t.Fatal("a hit of another key of the slot did not take it")
	}
	if e, err := c.find(ctx, h); err != nil || e.facts.APIKeyID != k.ID || !e.facts.Revoked {
		t.Fatalf("the first key after losing its slot: %+v %v", e, err)
	}
}

// randomFacts is facts of a random shape within apikey's limits: nil or
// empty or filled scopes (some of them "") and whitelists, IPv4 and IPv6.
func randomFacts(rng *rand.Rand) *apikey.Facts {
	f := &apikey.Facts{APIKeyID: apikey.NewID(apikey.Test), WorkspaceID: strings.Repeat("w", rng.IntN(apikey.MaxWorkspaceIDLen+1)),
		Mode: apikey.Mode(1 + rng.IntN(2)), ExpiresAt: rng.Int64N(2e9), Revoked: rng.IntN(2) == 0}
	if rng.IntN(4) > 0 {
		f.Scopes = []string{}
		for range rng.IntN(apikey.MaxScopes + 1) {
			f.Scopes = append(f.Scopes, strings.Repeat("s", rng.IntN(4)))
		}
	}
	if rng.IntN(4) > 0 {
		f.IPWhitelist = []netip.Prefix{}
		for range rng.IntN(apikey.MaxIPWhitelist + 1) {
			var a [16]byte
			for i := range a {
				a[i] = byte(rng.Uint32())
			}
			p := netip.PrefixFrom(netip.AddrFrom16(a), rng.IntN(129))
			if rng.IntN(2) == 0 {
				p = netip.PrefixFrom(netip.AddrFrom4([4]byte(a[:4])), rng.IntN(33))
			}
			f.IPWhitelist = append(f.IPWhitelist, p.Masked())
		}
	}
	return f
}

// newEntry keeps facts of any shape exactly (nil stays nil, empty stays
// empty), with their answer rendered, in memory of its own: scribbling
// over the facts it was made from changes nothing in it. Its cost covers at
// least the bytes of what it holds.
func TestNewEntryKeepsAnyFacts(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		f := randomFacts(rng)
		want := *f
		want.Scopes, want.IPWhitelist = slices.Clone(f.Scopes), slices.Clone(f.IPWhitelist)
		wantRendered := string(appendFacts(nil, f))
		h := apikey.Hash(fmt.Sprint(i))
		e, size := newEntry(f, h, uint64(i))
		for j := range f.Scopes {
			f.Scopes[j] = "changed"
		}
		for j := range f.IPWhitelist {
			f.IPWhitelist[j] = netip.Prefix{}
		}
		f.APIKeyID, f.WorkspaceID, f.Revoked = "x", "y", !f.Revoked
		if !reflect.DeepEqual(e.facts, want) { // DeepEqual tells nil from empty
			t.Fatalf("shape %d/%d: entry facts\n%+v\nwant\n%+v", len(want.Scopes), len(want.IPWhitelist), e.facts, want)
		}
		if e.hash != h || e.gen != uint64(i) || e.rendered != wantRendered {
			t.Fatalf("hash, generation or answer wrong: %q\nwant %q", e.rendered, wantRendered)
		}
		held := len(e.rendered) + len(want.APIKeyID) + len(want.WorkspaceID) + len(want.IPWhitelist)*int(unsafe.Sizeof(netip.Prefix{}))
		for _, sc := range want.Scopes {
			held += len(sc)
		}
		if size < int64(held) {
			t.Fatalf("shape %d/%d: cost %d below the %d bytes held", len(want.Scopes), len(want.IPWhitelist), size, held)
		}
	}
}

// A hit allocates nothing, whether the table of hot entries answers it or
// ristretto does (the verify hot path's 0-allocation target).
func TestCacheHitAllocatesNothing(t *testing.T) { // not parallel: AllocsPerRun
	ctx := context.Background()
	c := testCache(t, testBolt(t), CacheOptions{})
	defer c.Close()
	k := &store.Key{ID: apikey.NewID(apikey.Live), WorkspaceID: "ws", Name: "k", Mode: apikey.Live,
		Scopes: []string{"payment:read", "payment:write"}, IPWhitelist: []string{"10.0.0.0/16", "2001:db8::/32"}, CreatedAt: 1}
	h := apikey.Hash("allocation test secret")
	if err := c.Create(ctx, k, h, store.Event{EventID: "e", Action: store.ActionCreated}); err != nil {
		t.Fatal(err)
	}
	c.find(ctx, h) // the fill
	c.wait()
	slot := &c.hot[hotSlot(&h)]
	for _, tc := range []struct {
		name  string
		empty bool
	}{{"table", false}, {"ristretto", true}} {
		c.find(ctx, h) // into the table
		n := testing.AllocsPerRun(200, func() {
			if tc.empty {
				slot.Store(nil)
			}
			if e, err := c.find(ctx, h); err != nil || e.facts.APIKeyID != k.ID {
				t.Fatalf("hit: %v", err)
			}
		})
		if n != 0 {
			t.Errorf("a hit from the %s: %v allocations", tc.name, n)
		}
	}
}

// Two sidecars' caches on one PostgreSQL database, each invalidated by its
// store's Subscribe as Start wires it: a revoke through one is seen by the
// other well within the 1 s bound.
func TestCacheInvalidatedByPostgres(t *testing.T) {
	t.Parallel()
	admin := storetest.PostgresURL(t, "KEYGATE_TEST_POSTGRES")
	dsn := storetest.FreshDatabase(t, admin)
	a := testCache(t, openPostgres(t, dsn), CacheOptions{NumCounters: 1000, MaxCost: 1 << 20})
	defer a.Close()
	pb := openPostgres(t, dsn)
	b := testCache(t, pb, CacheOptions{NumCounters: 1000, MaxCost: 1 << 20})
	defer b.Close()
	subscribed := make(chan struct{}, 1)
	pb.Subscribe(context.Background(), func(string) {
		b.invalidate()
		select {
		case subscribed <- struct{}{}:
		default:
		}
	})
	<-subscribed // the call after connecting
	ctx := context.Background()
	secret := apikey.NewSecret(apikey.Live).Reveal()
	k := &store.Key{ID: apikey.NewID(apikey.Live), WorkspaceID: "ws", Name: "n", Scopes: []string{}, IPWhitelist: []string{}, CreatedAt: time.Now().Unix()}
	if err := a.Create(ctx, k, apikey.Hash(secret), store.Event{EventID: "c", Action: store.ActionCreated}); err != nil {
		t.Fatal(err)
	}
	for range 2 { // a fill, then a hit
		if f, err := b.Lookup(ctx, apikey.Hash(secret)); err != nil || f.Revoked {
			t.Fatalf("lookup on b: %+v %v", f, err)
		}
		b.wait()
	}
	revoked := time.Now()
	if _, err := a.Revoke(ctx, "ws", k.ID, revoked.Unix(), store.Event{EventID: "r", Action: store.ActionRevoked}); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := b.Lookup(ctx, apikey.Hash(secret))
		if err != nil {
			t.Fatal(err)
		}
		if f.Revoked {
			break
		}
		if time.Since(revoked) > time.Second {
			t.Fatal("revoked key still served from b's cache after 1 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("b saw the revoke after %s", time.Since(revoked))
}

func openPostgres(t testing.TB, dsn string) *store.Postgres {
	t.Helper()
	p, err := store.OpenPostgres(context.Background(), dsn, store.PostgresOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return p
}
