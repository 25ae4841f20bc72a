package store

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"sync/atomic"
	"time"

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
//
// In front of ristretto sits hot, a direct-mapped table of entries the cache
// holds: a hit there is one pointer load and the same generation and hash
// checks, and skips ristretto's per-Get bookkeeping (a sharded map under a
// lock, and the access buffer its admission policy drains on a goroutine
// of its own), which is most of the cost of a hit. An entry enters the
// table on a ristretto hit, never on a fill (ristretto may still reject
// it), and leaves when ristretto lets it go (OnExit) or another key's hit
// takes its slot. So it holds only entries ristretto holds, bar one whose
// eviction raced the hit that stored it: that one stays, checked like any
// other, until its slot is reused. One table hit in hotSample also calls
// ristretto's Get, so its admission policy keeps seeing that the key is
// used.
type Cached struct {
	Store
	cache   *ristretto.Cache[uint64, *Entry]
	gen     atomic.Uint64
	onStore func(time.Duration)
	render  func(*apikey.Facts) []byte
	hot     *[hotSlots]atomic.Pointer[Entry]
}

// hotSlots is the size of the table of hot entries (512 KiB of pointers:
// most of a working set of tens of thousands of keys finds its own slot);
// hotSample is how often a hit there is also reported to ristretto.
const (
	hotSlots  = 1 << 16
	hotSample = 8
)

// Entry is one cached lookup: the facts of a secret, by value (one pointer
// less to chase on a hit), and what CacheOptions.Render made of them. Its
// fields are never modified after it is cached, except the use mark
// (MarkUsed). What a hit reads first (hash, generation, use mark, rendered
// bytes) leads, so it shares cache lines with the start of the facts.
type Entry struct {
	hash [32]byte
	gen  uint64
	used atomic.Int64 // the last period MarkUsed claimed
	// Rendered is CacheOptions.Render of Facts, made when the entry was
	// read from the store (nil without a Render): a hit neither renders
	// nor follows another pointer to it.
	Rendered []byte
	Facts    apikey.Facts
}

// MarkUsed claims period (a caller's unit of time, such as a Unix minute)
// for this entry: it reports true, and the period it replaced, the first
// time a later period than any claimed before is marked. It lets a caller
// record each key's use once a period without a map of its own; an entry
// that is evicted and read again starts unmarked.
func (e *Entry) MarkUsed(period int64) (prev int64, first bool) {
	prev = e.used.Load()
	if prev >= period || !e.used.CompareAndSwap(prev, period) {
		return prev, false
	}
	return prev, true
}

// UnmarkUsed gives period back (when the caller could not record the use),
// unless a later period has been claimed since.
func (e *Entry) UnmarkUsed(period, prev int64) { e.used.CompareAndSwap(period, prev) }

var _ Store = (*Cached)(nil)

// CacheOptions size the cache; zero values take the defaults (1,000,000
// counters, 16 MiB). MaxCost is in bytes, counted per entry by factsCost
// (close to what an entry holds), so the cache's live heap is about
// MaxCost, and the process's about twice that with the GC's headroom; the
// table of hot entries in front of it adds a fixed 512 KiB.
type CacheOptions struct {
	NumCounters int64
	MaxCost     int64
	// OnStore, when set, is given the duration of every lookup that
	// reached the store (a miss), for metrics.
	OnStore func(time.Duration)
	// Render, when set, makes Entry.Rendered of the facts of every entry
	// read from the store (the sidecar's answer, so a hit does not write it).
	Render func(*apikey.Facts) []byte
}

// NewCached wraps s.
func NewCached(s Store, o CacheOptions) (*Cached, error) {
	if o.NumCounters <= 0 {
		o.NumCounters = 1_000_000
	}
	if o.MaxCost <= 0 {
		o.MaxCost = 16 << 20
	}
	hot := new([hotSlots]atomic.Pointer[Entry])
	c, err := ristretto.NewCache(&ristretto.Config[uint64, *Entry]{
		NumCounters: o.NumCounters,
		MaxCost:     o.MaxCost,
		BufferItems: 64,
		// Evicted, rejected, replaced or deleted: out of the table too
		// (a Del of an absent key exits nil).
		OnExit: func(e *Entry) {
			if e != nil {
				hot[hotSlot(&e.hash)].CompareAndSwap(e, nil)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	return &Cached{Store: s, cache: c, onStore: o.OnStore, render: o.Render, hot: hot}, nil
}

// cacheKey is ristretto's key for a hash (the hash is already uniform, so
// ristretto hashes nothing); hotSlot is the table slot, from other bits.
func cacheKey(h *[32]byte) uint64 { return binary.LittleEndian.Uint64(h[:8]) }
func hotSlot(h *[32]byte) uint32  { return binary.LittleEndian.Uint32(h[8:12]) % hotSlots }

// factsCost estimates the bytes an entry holds: the Entry, the cache's own
// bookkeeping for it (~80 B), the strings, the scopes and whitelist slices
// (a netip.Prefix is 32 B), the packed copy of the facts bolt decodes them
// from, and Entry.Rendered (the sidecar's JSON of them).
func factsCost(f *apikey.Facts) int64 {
	n := int64(380 + 3*(len(f.APIKeyID)+len(f.WorkspaceID)) + 55*len(f.IPWhitelist))
	for _, s := range f.Scopes {
		n += int64(20 + 3*len(s))
	}
	return n
}

// Lookup implements Store: a hit costs a hash compare and no allocation.
func (c *Cached) Lookup(ctx context.Context, h [32]byte) (*apikey.Facts, error) {
	e, err := c.Find(ctx, h)
	if err != nil {
		return nil, err
	}
	return &e.Facts, nil
}

// Find is Lookup that returns the cache entry, whose use the caller may
// mark. The entry is shared: never modify its Facts.
func (c *Cached) Find(ctx context.Context, h [32]byte) (*Entry, error) {
	g := c.gen.Load()
	slot := &c.hot[hotSlot(&h)]
	if e := slot.Load(); e != nil && e.gen == g && e.hash == h {
		if rand.Uint32()%hotSample == 0 {
			c.cache.Get(cacheKey(&h))
		}
		return e, nil
	}
	if e, ok := c.cache.Get(cacheKey(&h)); ok && e.gen == g && e.hash == h {
		slot.Store(e)
		return e, nil
	}
	var start time.Time
	if c.onStore != nil {
		start = time.Now()
	}
	f, err := c.Store.Lookup(ctx, h)
	if c.onStore != nil {
		c.onStore(time.Since(start))
	}
	if err != nil {
		return nil, err
	}
	e := &Entry{Facts: *f, hash: h, gen: g}
	if c.render != nil {
		e.Rendered = c.render(f)
	}
	c.cache.Set(cacheKey(&h), e, factsCost(f))
	return e, nil
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
