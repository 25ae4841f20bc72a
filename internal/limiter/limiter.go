// Package limiter is a bounded, keyed limiter of failures: one token bucket
// (golang.org/x/time/rate) per key — a client IP, an API key id — that
// every recorded failure drains by one token. A key whose bucket holds less
// than one token is blocked until the bucket has refilled that token.
//
// Invariants:
//
//   - Memory is bounded: at most MaxKeys buckets are kept. A new key when
//     the limiter is full evicts the least recently failed key; buckets that
//     have refilled completely (they carry no information) are dropped as
//     they reach the old end. An attacker rotating keys (addresses) cannot
//     grow memory; at worst each evicted key starts again with a full burst.
//   - Nothing runs in the background: eviction happens in Fail.
//   - A key nobody failed for is never blocked; a blocked key is unblocked
//     at the latest after (1 token)/rate, so Retry-After is exact within
//     the clock's resolution (rounded up to whole seconds by Seconds).
//   - AnyBlocked is one atomic load: callers may ask it on every request to
//     skip a costlier lookup (for the plugin, a PDK round trip for the
//     client IP) while nobody is blocked. It may say true a little longer
//     than necessary (it is the latest end of any block, and keys may have
//     been evicted since), never false while a key is blocked.
//   - Safe for concurrent use; the time is passed in (pure: tests and the
//     plugin's clock decide it).
package limiter

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Limiter tracks failures per key. The zero value is not usable; call New.
type Limiter struct {
	every   rate.Limit // tokens per second
	burst   int
	maxKeys int

	mu   sync.Mutex
	m    map[string]*entry
	head entry // sentinel of the recency list: head.next is the newest

	blockedUntil atomic.Int64 // Unix nanoseconds: the latest end of any block
}

type entry struct {
	key        string
	bucket     *rate.Limiter
	prev, next *entry
}

// New returns a limiter allowing burst failures per key at once, refilled at
// perMinute failures per minute, tracking at most maxKeys keys. perMinute,
// burst and maxKeys must be positive.
func New(perMinute, burst, maxKeys int) *Limiter {
	if perMinute < 1 || burst < 1 || maxKeys < 1 {
		panic("limiter.New: perMinute, burst and maxKeys must be positive")
	}
	l := &Limiter{
		every:   rate.Limit(float64(perMinute) / 60),
		burst:   burst,
		maxKeys: maxKeys,
		m:       make(map[string]*entry),
	}
	l.head.prev, l.head.next = &l.head, &l.head
	return l
}

// Fail records one failure of key at now. It reports whether key is
// blocked after it, and for how long.
func (l *Limiter) Fail(key string, now time.Time) (retryAfter time.Duration, blocked bool) {
	l.mu.Lock()
	e := l.m[key]
	if e == nil {
		l.dropIdle(now, 2)
		if len(l.m) >= l.maxKeys {
			l.remove(l.head.prev) // the least recently failed key
		}
		e = &entry{key: key, bucket: rate.NewLimiter(l.every, l.burst)}
		l.m[key] = e
	} else {
		l.unlink(e)
	}
	l.pushFront(e)
	e.bucket.AllowN(now, 1) // takes a token when there is one
	tokens := e.bucket.TokensAt(now)
	l.mu.Unlock()
	if tokens >= 1 {
		return 0, false
	}
	retryAfter = l.wait(tokens)
	l.markBlocked(now.Add(retryAfter))
	return retryAfter, true
}

// Blocked reports whether key is blocked at now and for how long.
func (l *Limiter) Blocked(key string, now time.Time) (retryAfter time.Duration, blocked bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.m[key]
	if e == nil {
		return 0, false
	}
	tokens := e.bucket.TokensAt(now)
	if tokens >= 1 {
		return 0, false
	}
	// Still hammering while blocked: keep it at the new end, so churning
	// other keys does not evict it first.
	l.unlink(e)
	l.pushFront(e)
	return l.wait(tokens), true
}

// AnyBlocked reports whether some key may be blocked at now: false means
// no key is.
func (l *Limiter) AnyBlocked(now time.Time) bool {
	return now.UnixNano() < l.blockedUntil.Load()
}

// Len is the number of keys tracked.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// Seconds is d in whole seconds for a Retry-After header: rounded up, at
// least 1.
func Seconds(d time.Duration) int {
	s := int(math.Ceil(d.Seconds()))
	if s < 1 {
		return 1
	}
	return s
}

// wait is how long a bucket holding tokens (< 1) takes to hold 1.
func (l *Limiter) wait(tokens float64) time.Duration {
	d := time.Duration((1 - tokens) / float64(l.every) * float64(time.Second))
	if d < time.Nanosecond {
		d = time.Nanosecond
	}
	return d
}

func (l *Limiter) markBlocked(until time.Time) {
	u := until.UnixNano()
	for {
		cur := l.blockedUntil.Load()
		if u <= cur || l.blockedUntil.CompareAndSwap(cur, u) {
			return
		}
	}
}

// dropIdle removes up to n keys from the old end whose buckets have
// refilled completely: forgetting them changes nothing.
func (l *Limiter) dropIdle(now time.Time, n int) {
	for ; n > 0; n-- {
		old := l.head.prev
		if old == &l.head || old.bucket.TokensAt(now) < float64(l.burst) {
			return
		}
		l.remove(old)
	}
}

func (l *Limiter) remove(e *entry) {
	l.unlink(e)
	delete(l.m, e.key)
}

func (l *Limiter) unlink(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (l *Limiter) pushFront(e *entry) {
	e.prev, e.next = &l.head, l.head.next
	l.head.next.prev = e
	l.head.next = e
}
