package store

import (
	"context"
	"encoding/binary"
	"sync/atomic"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/keygate/keygate/internal/apikey"
)

// Cached is a Store whose Lookup is served from a ristretto cache.
//
// Ristretto may drop any entry and applies Set asynchronously, so a Set
// issued by a lookup that read the store before a revoke committed could
// land after the revoke. Every entry therefore carries the generation it
// was read under; Revoke, Roll and Invalidate bump the generation before
// they return, and an entry of an older generation is a miss. Revocations
// are rare, so invalidating every entry at once costs little.
type Cached struct {
	Store
	cache *ristretto.Cache[uint64, *cacheEntry]
	gen   atomic.Uint64
}

// cacheEntry holds the facts by value: one pointer less to chase on a hit.
// Entries are never modified after Set.
type cacheEntry struct {
	hash  [32]byte
	gen   uint64
	facts apikey.Facts
}

var _ Store = (*Cached)(nil)

// CacheOptions size the cache; zero values take the defaults (1,000,000
// counters, 64 MiB).
type CacheOptions struct {
	NumCounters int64
	MaxCost     int64
}

// NewCached wraps s.
func NewCached(s Store, o CacheOptions) (*Cached, error) {
	if o.NumCounters <= 0 {
		o.NumCounters = 1_000_000
	}
	if o.MaxCost <= 0 {
		o.MaxCost = 64 << 20
	}
	c, err := ristretto.NewCache(&ristretto.Config[uint64, *cacheEntry]{
		NumCounters: o.NumCounters,
		MaxCost:     o.MaxCost,
		BufferItems: 64,
	})
	if err != nil {
		return nil, err
	}
	return &Cached{Store: s, cache: c}, nil
}

func cacheKey(h *[32]byte) uint64 { return binary.LittleEndian.Uint64(h[:8]) }

func factsCost(f *apikey.Facts) int64 {
	n := int64(160 + len(f.APIKeyID) + len(f.WorkspaceID) + 32*len(f.IPWhitelist))
	for _, s := range f.Scopes {
		n += int64(16 + len(s))
	}
	return n
}

// Lookup implements Store: a hit costs a hash compare and no allocation.
func (c *Cached) Lookup(ctx context.Context, h [32]byte) (*apikey.Facts, error) {
	g := c.gen.Load()
	if e, ok := c.cache.Get(cacheKey(&h)); ok && e.gen == g && e.hash == h {
		return &e.facts, nil
	}
	f, err := c.Store.Lookup(ctx, h)
	if err != nil {
		return nil, err
	}
	e := &cacheEntry{hash: h, gen: g, facts: *f}
	c.cache.Set(cacheKey(&h), e, factsCost(f))
	f = &e.facts
	return f, nil
}

// Invalidate makes every cached entry stale (for backends that learn of
// changes made elsewhere).
func (c *Cached) Invalidate() { c.gen.Add(1) }

// Revoke implements Store.
func (c *Cached) Revoke(ctx context.Context, ws, id string, at int64, ev Event) (*Key, error) {
	k, err := c.Store.Revoke(ctx, ws, id, at, ev)
	c.gen.Add(1)
	return k, err
}

// Roll implements Store.
func (c *Cached) Roll(ctx context.Context, ws, id string, newHash [32]byte, hint string, now, oldValidUntil int64, ev Event) (*Key, error) {
	k, err := c.Store.Roll(ctx, ws, id, newHash, hint, now, oldValidUntil, ev)
	c.gen.Add(1)
	return k, err
}

// Close implements Store.
func (c *Cached) Close() error {
	c.cache.Close()
	return c.Store.Close()
}

// Wait blocks until every Set issued so far is applied (tests, benchmarks).
func (c *Cached) Wait() { c.cache.Wait() }
