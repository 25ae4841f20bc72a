package plugin

import (
	"sync"
	"time"

	"github.com/keygate/keygate/internal/apikey"
)

// factsCache caches the verify answer of a secret — its facts, or nil for a
// key the service does not accept — for at most cache_ttl_ms (≤ 1 s, the
// revocation bound). It caches facts, never a route's decision: every
// request is decided again with apikey.Decide.
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
	facts   *apikey.Facts // immutable once cached; nil: not a valid key
	expires time.Time
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
func (c *factsCache) get(k cacheKey, now time.Time) (f *apikey.Facts, fresh, known bool) {
	s := c.shard(&k)
	s.mu.Lock()
	e, ok := s.m[k]
	s.mu.Unlock()
	if !ok {
		return nil, false, false
	}
	if !now.Before(e.expires) {
		return nil, false, e.facts != nil
	}
	return e.facts, true, e.facts != nil
}

// put caches an answer until expires. The caller computes expires from the
// moment it asked the service, so an answer cannot outlive the bound
// however slow the call was.
func (c *factsCache) put(k cacheKey, f *apikey.Facts, expires, now time.Time) {
	if !now.Before(expires) {
		return
	}
	s := c.shard(&k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[cacheKey]cacheEntry)
	}
	if _, exists := s.m[k]; !exists && len(s.m) >= cacheShardCap {
		for key, e := range s.m {
			if !now.Before(e.expires) {
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
	s.m[k] = cacheEntry{facts: f, expires: expires}
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
