package plugin

import (
	"sync"
	"time"

	"github.com/keygate/keygate/internal/apikey"
)

// factsCache caches the verify answer of a secret — its facts, or nil for a
// key the service does not accept. An entry is fresh for cache_ttl_ms (≤ 1
// s, the revocation bound) from when it was last confirmed: when it was
// fetched, or, for facts fetched while the sidecar's invalidation stream
// was live, when the last line of that same subscription was read, and
// then for at most cache_ttl_pushed_ms from its fetch (push.go). The stream
// drops entries as the sidecar names them. It caches facts, never a
// route's decision: every request is decided again with apikey.Decide.
//
// It is bounded (cacheShards × cacheShardCap entries), shared by every
// instance of the process (keyed by the sidecar and the SHA-256 of the
// secret: the plaintext is never kept), and runs no goroutine: expired
// entries are dropped when a full shard needs room.
type factsCache struct {
	shards [cacheShards]cacheShard
}

const (
	cacheShards   = 16
	cacheShardCap = 4096
)

type cacheKey struct {
	ns   string // the sidecar URL
	hash [32]byte
}

type cacheEntry struct {
	facts *apikey.Facts // immutable once cached; nil: not a valid key
	at    int64         // monoNs when the sidecar was asked
	ttl   int64         // ns: cache_ttl_ms, or less if the sidecar said so
	// pushed (ns; 0: none) is how long the entry may live from at while the
	// stream it was fetched under (epoch) keeps confirming it.
	pushed int64
	epoch  uint64
}

// fresh reports whether e may answer at now (monoNs), given the stream of
// its sidecar (nil: none).
func (e *cacheEntry) fresh(now int64, st *pushStream) bool {
	if now < e.at+e.ttl {
		return true
	}
	if e.pushed == 0 || st == nil || now >= e.at+e.pushed || st.epoch.Load() != e.epoch {
		return false
	}
	return now < st.beat.Load()+e.ttl // the last confirmation, plus the ≤ 1 s rule
}

type cacheShard struct {
	mu sync.Mutex
	m  map[cacheKey]cacheEntry
}

var sharedCache = &factsCache{}

func (c *factsCache) shard(k *cacheKey) *cacheShard { return &c.shards[k.hash[0]%cacheShards] }

// get returns the cached answer and whether there is a fresh one. known
// reports an entry, fresh or expired, that said the key was valid: the key
// opened a door recently, which an attacker guessing keys cannot fake. It
// is never a reason to allow, only to let a lookup through (see enforce).
func (c *factsCache) get(k cacheKey, now time.Time, st *pushStream) (f *apikey.Facts, fresh, known bool) {
	s := c.shard(&k)
	s.mu.Lock()
	e, ok := s.m[k]
	s.mu.Unlock()
	if !ok {
		return nil, false, false
	}
	if !e.fresh(monoNs(now), st) {
		return nil, false, e.facts != nil
	}
	return e.facts, true, e.facts != nil
}

// put caches an answer asked at asked. The caller measures from the moment
// it asked the service, so an answer cannot outlive the bound however slow
// the call was. A valid key's facts (f non-nil) fetched under a live
// stream (epoch, with the stream's seq read before asking) may live for
// pushed: unless an invalidation or a resubscription came in meanwhile,
// which is checked under the shard's lock, the lock the stream's drops
// take, so that either the check sees it or the drop sees the entry.
func (c *factsCache) put(k cacheKey, f *apikey.Facts, asked time.Time, ttl, pushed time.Duration, st *pushStream, epoch, seq uint64, now time.Time) {
	e := cacheEntry{facts: f, at: monoNs(asked), ttl: int64(ttl)}
	nowNs := monoNs(now)
	s := c.shard(&k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if f != nil && st != nil && epoch != 0 && pushed > ttl && st.seq.Load() == seq {
		e.pushed, e.epoch = int64(pushed), epoch
	}
	if !e.fresh(nowNs, st) {
		return
	}
	if s.m == nil {
		s.m = make(map[cacheKey]cacheEntry)
	}
	if _, exists := s.m[k]; !exists && len(s.m) >= cacheShardCap {
		for key, old := range s.m {
			if !old.fresh(nowNs, st) {
				delete(s.m, key)
			}
		}
		for key := range s.m { // still full of fresh entries: drop arbitrary ones, with slack
			if len(s.m) < cacheShardCap*7/8 {
				break
			}
			delete(s.m, key)
		}
	}
	s.m[k] = e
}

// dropKey removes every entry of sidecar ns whose facts are key id's.
func (c *factsCache) dropKey(ns, id string) {
	c.drop(func(k *cacheKey, e *cacheEntry) bool { return k.ns == ns && e.facts != nil && e.facts.APIKeyID == id })
}

// dropNS removes every entry of sidecar ns.
func (c *factsCache) dropNS(ns string) {
	c.drop(func(k *cacheKey, _ *cacheEntry) bool { return k.ns == ns })
}

// drop scans every shard (a revoke is rare; a request never waits for more
// than one shard's scan).
func (c *factsCache) drop(match func(*cacheKey, *cacheEntry) bool) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for k, e := range s.m {
			if match(&k, &e) {
				delete(s.m, k)
			}
		}
		s.mu.Unlock()
	}
}

// len is the number of entries, for tests.
func (c *factsCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
