package sidecar

import (
	"sync"
	"time"
)

// DefaultMaxAssertions bounds the identity assertions a sidecar remembers
// (Config.MaxAssertions): about 100 bytes each, so 6–7 MiB at the bound.
// Each is remembered until its exp plus identity.Leeway (at most 65 s), so
// the bound is reached only above about 1,000 management requests a second
// through one sidecar.
const DefaultMaxAssertions = 1 << 16

// seenIDs remembers the jti of every identity assertion accepted within its
// lifetime, so that each is accepted once. It is bounded: when full of
// unexpired ids it refuses new ones (fail closed) instead of forgetting an
// id that could then be replayed.
type seenIDs struct {
	mu        sync.Mutex
	until     map[string]int64 // jti → unix time after which it may be forgotten
	max       int
	lastSweep int64
}

func newSeenIDs(max int) *seenIDs {
	return &seenIDs{until: make(map[string]int64), max: max}
}

// seenResult is what first says of an assertion id.
type seenResult uint8

const (
	seenFirst  seenResult = iota // not seen before: now remembered
	seenReplay                   // seen before within its lifetime
	seenFull                     // the memory is full of live ids: refused
)

// first records id, remembered until forgetAt (unix seconds), and says
// whether it is new.
func (s *seenIDs) first(id string, forgetAt int64, now time.Time) seenResult {
	n := now.Unix()
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.until[id]; ok && t >= n {
		return seenReplay
	}
	if len(s.until) >= s.max && s.lastSweep != n {
		// Forget what expired, at most once a second: a full memory of
		// live ids costs one sweep a second, not one a request.
		s.lastSweep = n
		for k, t := range s.until {
			if t < n {
				delete(s.until, k)
			}
		}
	}
	if len(s.until) >= s.max {
		return seenFull
	}
	s.until[id] = forgetAt
	return seenFirst
}
