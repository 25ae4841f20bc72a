package store

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

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

// hotSlots is the size of the table of hot entries (1 MiB of pointers: of
// a working set of 10,000 keys, 93 % have a slot of their own, and a key
// that shares its slot costs a ristretto Get, ~0.8 µs of CPU-cache misses,
// whenever the other took the slot last); hotSample is how often a hit
// there is also reported to ristretto, whose admission compares how often
// keys are used. A key in the table is counted at an eighth of its use; a
// rarer sample would save a little time (~0.08 µs a hit at 1 in 32) but
// make keys in the table look rarer still, next to keys ristretto has just
// seen, when a full cache must choose what to keep.
const (
	hotSlots  = 1 << 17
	hotSample = 8
)

// Entry is one cached lookup: the facts of a secret, by value (one pointer
// less to chase on a hit), and what CacheOptions.Render made of them. Its
// fields are never modified after it is cached, except the use mark
// (MarkUsed). What a hit reads first (hash, generation, use mark) leads.
// newEntry packs an entry into two allocations, so that a hit reads two
// runs of adjacent memory rather than eight scattered ones.
type Entry struct {
	hash [32]byte
	gen  uint64
	used atomic.Int64 // the last period MarkUsed claimed
	// Rendered is CacheOptions.Render of Facts, made when the entry was
	// read from the store ("" without a Render): a hit does not render.
	Rendered string
	Facts    apikey.Facts
}

// Blocks of an entry with its scopes and whitelist beside it, by the most
// scopes and networks they hold. A key with more gets a plain Entry and
// slices of their own.
type (
	entrySmall struct {
		Entry
		scopes [4]string
		ips    [2]netip.Prefix
	}
	entryMedium struct {
		Entry
		scopes [8]string
		ips    [4]netip.Prefix
	}
	entryLarge struct {
		Entry
		scopes [8]string
		ips    [16]netip.Prefix
	}
)

// newEntry makes the entry of f, read under generation gen, in two
// allocations: a block with the Entry and the backing arrays of its scopes
// and whitelist (entrySmall, entryMedium, entryLarge), and one string of
// the scope names, the rendered answer and the two ids (in the order a hit
// reads them), of which the entry's strings are parts. A hit over many keys
// is bound by CPU-cache misses, and so touches two runs of adjacent memory
// instead of eight scattered allocations. The slices are capped at their
// length, so an append by a reader copies rather than writing into the
// block. It copies f, which the caller may drop, and returns the bytes the
// entry holds, for the cache's cost (unsafe is imported for Sizeof only).
func newEntry(f *apikey.Facts, h [32]byte, gen uint64, render func(*apikey.Facts) []byte) (*Entry, int64) {
	var (
		e      *Entry
		scopes []string
		ips    []netip.Prefix
		size   int64
	)
	switch ns, ni := len(f.Scopes), len(f.IPWhitelist); {
	case ns <= 4 && ni <= 2:
		b := new(entrySmall)
		e, scopes, ips, size = &b.Entry, b.scopes[:ns:ns], b.ips[:ni:ni], int64(unsafe.Sizeof(*b))
	case ns <= 8 && ni <= 4:
		b := new(entryMedium)
		e, scopes, ips, size = &b.Entry, b.scopes[:ns:ns], b.ips[:ni:ni], int64(unsafe.Sizeof(*b))
	case ns <= 8 && ni <= 16:
		b := new(entryLarge)
		e, scopes, ips, size = &b.Entry, b.scopes[:ns:ns], b.ips[:ni:ni], int64(unsafe.Sizeof(*b))
	default:
		e, scopes, ips = new(Entry), make([]string, ns), make([]netip.Prefix, ni)
		size = int64(unsafe.Sizeof(*e)) + int64(ns)*int64(unsafe.Sizeof("")) + int64(ni)*int64(unsafe.Sizeof(netip.Prefix{}))
	}
	var rendered []byte
	if render != nil {
		rendered = render(f)
	}
	var sb strings.Builder
	n := len(rendered) + len(f.APIKeyID) + len(f.WorkspaceID)
	for _, sc := range f.Scopes {
		n += len(sc)
	}
	sb.Grow(n)
	for _, sc := range f.Scopes {
		sb.WriteString(sc)
	}
	sb.Write(rendered)
	sb.WriteString(f.APIKeyID)
	sb.WriteString(f.WorkspaceID)
	all := sb.String()
	next := func(k int) string {
		s := all[:k]
		all = all[k:]
		return s
	}
	e.hash, e.gen, e.Facts = h, gen, *f
	for i, sc := range f.Scopes {
		scopes[i] = next(len(sc))
	}
	e.Rendered = next(len(rendered))
	e.Facts.APIKeyID = next(len(f.APIKeyID))
	e.Facts.WorkspaceID = next(len(f.WorkspaceID))
	copy(ips, f.IPWhitelist)
	if f.Scopes == nil { // nil stays nil: the entry holds what the store returned
		scopes = nil
	}
	if f.IPWhitelist == nil {
		ips = nil
	}
	e.Facts.Scopes, e.Facts.IPWhitelist = scopes, ips
	return e, size + int64(n)
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
// counters, 16 MiB). MaxCost is in bytes, counted per entry as the bytes
// newEntry allocated plus entryOverhead, so the cache's live heap is about
// MaxCost, and the process's about twice that with the GC's headroom; the
// table of hot entries in front of it adds a fixed 1 MiB.
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

// entryOverhead is what the cache holds per entry besides the entry
// itself and ristretto's item (which ristretto adds to the cost itself):
// the item's map slot, and the rounding of the two allocations to the
// allocator's size classes.
const entryOverhead = 128

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
	e, size := newEntry(f, h, g, c.render)
	c.cache.Set(cacheKey(&h), e, size+entryOverhead)
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
