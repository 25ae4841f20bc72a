package sidecar

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/store"
)

// cache is the verify cache: a store.Store whose lookups are served from a
// ristretto cache of entries that hold the key's facts and the verify
// answer's facts members already rendered (appendFacts), so that a hit
// neither reads the store nor writes JSON. Every other method goes to the
// store beneath.
//
// Ristretto may drop any entry and applies Set asynchronously, so a Set
// issued by a lookup that read the store before a revoke committed could
// land after the revoke. Every entry therefore carries the generation it
// was read under; Revoke, Roll and invalidate bump the generation before
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
type cache struct {
	store.Store
	ristretto *ristretto.Cache[uint64, *entry]
	gen       atomic.Uint64
	hot       *[hotSlots]atomic.Pointer[entry]
	// onMiss, when set, sees the facts of every entry read from the store
	// (the expiry timers of the invalidation stream); never on a hit.
	onMiss func(*apikey.Facts)
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

// entry is one cached lookup: the facts of a secret, by value (one pointer
// less to chase on a hit), and appendFacts of them. Its fields are never
// modified after it is cached, except the use mark (markUsed). What a hit
// reads first (hash, generation, use mark) leads.
type entry struct {
	hash [32]byte
	gen  uint64
	used atomic.Int64 // the last period markUsed claimed
	// rendered is appendFacts of facts, made when the entry was read from
	// the store: a hit does not render.
	rendered string
	facts    apikey.Facts
}

// newEntry makes the entry of f, read under generation gen, and returns
// the bytes it allocated, for the cache's cost (unsafe is imported for
// Sizeof only). The entry shares no memory with f: the store's strings
// may be parts of a larger value it decoded, which a cached entry must not
// keep alive, and the caller may reuse f.
func newEntry(f *apikey.Facts, h [32]byte, gen uint64) (*entry, int64) {
	var buf [512]byte
	e := &entry{hash: h, gen: gen, facts: *f}
	e.rendered = string(appendFacts(buf[:0], f))
	e.facts.APIKeyID = strings.Clone(f.APIKeyID)
	e.facts.WorkspaceID = strings.Clone(f.WorkspaceID)
	size := int64(unsafe.Sizeof(*e)) + int64(len(e.rendered)+len(f.APIKeyID)+len(f.WorkspaceID))
	if f.Scopes != nil { // nil stays nil: the entry holds what the store returned
		e.facts.Scopes = make([]string, len(f.Scopes))
		for i, sc := range f.Scopes {
			e.facts.Scopes[i] = strings.Clone(sc)
			size += int64(unsafe.Sizeof(sc)) + int64(len(sc))
		}
	}
	e.facts.IPWhitelist = slices.Clone(f.IPWhitelist)
	size += int64(len(f.IPWhitelist)) * int64(unsafe.Sizeof(netip.Prefix{}))
	return e, size
}

// markUsed claims period (a caller's unit of time, such as a Unix minute)
// for this entry: it reports true, and the period it replaced, the first
// time a later period than any claimed before is marked. It lets a caller
// record each key's use once a period without a map of its own; an entry
// that is evicted and read again starts unmarked.
func (e *entry) markUsed(period int64) (prev int64, first bool) {
	prev = e.used.Load()
	if prev >= period || !e.used.CompareAndSwap(prev, period) {
		return prev, false
	}
	return prev, true
}

// unmarkUsed gives period back (when the caller could not record the use),
// unless a later period has been claimed since.
func (e *entry) unmarkUsed(period, prev int64) { e.used.CompareAndSwap(period, prev) }

var _ store.Store = (*cache)(nil)

// CacheOptions size the verify cache; zero values take the defaults
// (1,000,000 counters, 16 MiB). MaxCost is in bytes, counted per entry as
// the bytes newEntry allocated plus entryOverhead, so the cache's live heap
// is about MaxCost, and the process's about twice that with the GC's
// headroom; the table of hot entries in front of it adds a fixed 1 MiB.
type CacheOptions struct {
	NumCounters int64
	MaxCost     int64
}

// newCache wraps s.
func newCache(s store.Store, o CacheOptions) (*cache, error) {
	if o.NumCounters <= 0 {
		o.NumCounters = 1_000_000
	}
	if o.MaxCost <= 0 {
		o.MaxCost = 16 << 20
	}
	hot := new([hotSlots]atomic.Pointer[entry])
	r, err := ristretto.NewCache(&ristretto.Config[uint64, *entry]{
		NumCounters: o.NumCounters,
		MaxCost:     o.MaxCost,
		BufferItems: 64,
		// Evicted, rejected, replaced or deleted: out of the table too
		// (a Del of an absent key exits nil).
		OnExit: func(e *entry) {
			if e != nil {
				hot[hotSlot(&e.hash)].CompareAndSwap(e, nil)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	return &cache{Store: s, ristretto: r, hot: hot}, nil
}

// cacheKey is ristretto's key for a hash (the hash is already uniform, so
// ristretto hashes nothing); hotSlot is the table slot, from other bits.
func cacheKey(h *[32]byte) uint64 { return binary.LittleEndian.Uint64(h[:8]) }
func hotSlot(h *[32]byte) uint32  { return binary.LittleEndian.Uint32(h[8:12]) % hotSlots }

// entryOverhead is what the cache holds per entry besides the entry
// itself and ristretto's item (which ristretto adds to the cost itself):
// the item's map slot, and the rounding of the entry's allocations to the
// allocator's size classes (20–70 B for keys of 1 to 8 scopes and up to 16
// networks).
const entryOverhead = 128

// Lookup implements store.Store: a hit costs a hash compare and no
// allocation.
func (c *cache) Lookup(ctx context.Context, h [32]byte) (*apikey.Facts, error) {
	e, err := c.find(ctx, h)
	if err != nil {
		return nil, err
	}
	return &e.facts, nil
}

// find is Lookup that returns the cache entry, whose use the caller may
// mark. The entry is shared: never modify its facts.
func (c *cache) find(ctx context.Context, h [32]byte) (*entry, error) {
	g := c.gen.Load()
	slot := &c.hot[hotSlot(&h)]
	if e := slot.Load(); e != nil && e.gen == g && e.hash == h {
		if rand.Uint32()%hotSample == 0 {
			c.ristretto.Get(cacheKey(&h))
		}
		return e, nil
	}
	if e, ok := c.ristretto.Get(cacheKey(&h)); ok && e.gen == g && e.hash == h {
		slot.Store(e)
		return e, nil
	}
	f, err := c.Store.Lookup(ctx, h)
	if err != nil {
		return nil, err
	}
	if c.onMiss != nil {
		c.onMiss(f)
	}
	e, size := newEntry(f, h, g)
	c.ristretto.Set(cacheKey(&h), e, size+entryOverhead)
	return e, nil
}

// invalidate makes every cached entry stale: the store changed in a way
// this cache did not see (another sidecar's write, reported by the
// store's Subscribe).
func (c *cache) invalidate() { c.gen.Add(1) }

// Revoke implements store.Store.
func (c *cache) Revoke(ctx context.Context, ws, id string, at int64, ev store.Event) (*store.Key, error) {
	k, err := c.Store.Revoke(ctx, ws, id, at, ev)
	c.invalidate()
	return k, err
}

// Roll implements store.Store.
func (c *cache) Roll(ctx context.Context, ws, id string, newHash [32]byte, hint string, now, oldValidUntil int64, ev store.Event) (*store.Key, error) {
	k, err := c.Store.Roll(ctx, ws, id, newHash, hint, now, oldValidUntil, ev)
	c.invalidate()
	return k, err
}

// Close implements store.Store.
func (c *cache) Close() error {
	c.ristretto.Close()
	return c.Store.Close()
}

// wait blocks until every Set issued so far is applied (tests, benchmarks).
func (c *cache) wait() { c.ristretto.Wait() }

// metered is a store.Store that times every call into the store beneath
// for keygate_store_seconds{op}. Under the cache, its lookups are the
// cache's misses.
type metered struct {
	store.Store
	m *metrics
}

func (s metered) Create(ctx context.Context, k *store.Key, h [32]byte, ev store.Event) error {
	defer s.m.observe("create", time.Now())
	return s.Store.Create(ctx, k, h, ev)
}

func (s metered) Get(ctx context.Context, ws, id string) (*store.Key, error) {
	defer s.m.observe("get", time.Now())
	return s.Store.Get(ctx, ws, id)
}

func (s metered) List(ctx context.Context, ws string, p store.Page) ([]*store.Key, string, error) {
	defer s.m.observe("list", time.Now())
	return s.Store.List(ctx, ws, p)
}

func (s metered) Revoke(ctx context.Context, ws, id string, at int64, ev store.Event) (*store.Key, error) {
	defer s.m.observe("revoke", time.Now())
	return s.Store.Revoke(ctx, ws, id, at, ev)
}

func (s metered) Roll(ctx context.Context, ws, id string, newHash [32]byte, hint string, now, oldValidUntil int64, ev store.Event) (*store.Key, error) {
	defer s.m.observe("roll", time.Now())
	return s.Store.Roll(ctx, ws, id, newHash, hint, now, oldValidUntil, ev)
}

func (s metered) Lookup(ctx context.Context, h [32]byte) (*apikey.Facts, error) {
	defer s.m.observe("lookup", time.Now())
	return s.Store.Lookup(ctx, h)
}

func (s metered) Record(ctx context.Context, ev store.Event) error {
	defer s.m.observe("record", time.Now())
	return s.Store.Record(ctx, ev)
}

func (s metered) Events(ctx context.Context, ws, apiKeyID string, p store.Page) ([]*store.Event, string, error) {
	defer s.m.observe("events", time.Now())
	return s.Store.Events(ctx, ws, apiKeyID, p)
}

func (s metered) TouchLastUsed(ctx context.Context, used map[string]int64) error {
	defer s.m.observe("touch", time.Now())
	return s.Store.TouchLastUsed(ctx, used)
}
