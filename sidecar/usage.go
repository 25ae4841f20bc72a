package sidecar

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/keygate/keygate/store"
)

// usage records lastUsedAt off the verify path. Each cached lookup carries
// the last minute its use was marked (entry.markUsed); only the first
// allowed use of an entry in a minute sends a mark here (a non-blocking
// send: when the queue is full the mark is given back and retried on the
// next use). So the hot path touches no map of ours, and the marks of a
// key coalesce here. The flusher writes the coalesced marks every interval
// and on close. A crash loses at most the marks of the last interval, never
// a key.
type usage struct {
	queue chan mark
	done  chan struct{}
	wg    sync.WaitGroup
}

type mark struct {
	id string
	at int64
}

func newUsage(st store.Store, every time.Duration, log *slog.Logger) *usage {
	u := &usage{queue: make(chan mark, 4096), done: make(chan struct{})}
	u.wg.Add(1)
	go u.flusher(st, every, log)
	return u
}

// used records an allowed use of e's key at now (Unix seconds).
func (u *usage) used(e *entry, now int64) {
	minute := now / 60
	prev, first := e.markUsed(minute)
	if !first {
		return
	}
	select {
	// A copy of the id: the entry's is part of the string that holds its
	// whole answer, which a mark pending while the store fails would keep.
	case u.queue <- mark{strings.Clone(e.facts.APIKeyID), now}:
	default:
		e.unmarkUsed(minute, prev) // queue full: try again on the next use
	}
}

// usageBatch is how many keys' marks the flusher collects before it
// writes them at once, ahead of the tick: one transaction of at most 512
// leaf pages (a few MB of the Go heap while it is built, against ~25 MB at
// 2,048 when every mark lands on a page of its own), not one of every key
// used in the interval; maxPending bounds the marks it
// keeps while the store fails (more are dropped: lastUsedAt is best effort,
// never a reason to fail or to grow without bound).
const (
	usageBatch = 512
	maxPending = 64 << 10
)

func (u *usage) flusher(st store.Store, every time.Duration, log *slog.Logger) {
	defer u.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	pending := map[string]int64{}
	failing, dropped := false, 0
	flush := func() {
		if len(pending) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := st.TouchLastUsed(ctx, pending); err != nil {
			log.Warn("lastUsedAt flush failed", "keys", len(pending), "dropped", dropped, "err", err)
			failing = true
			return // kept for the next tick
		}
		pending, failing, dropped = map[string]int64{}, false, 0
	}
	add := func(m mark) {
		if old, ok := pending[m.id]; ok {
			pending[m.id] = max(old, m.at)
			return
		}
		if len(pending) >= maxPending {
			dropped++
			return
		}
		// A copy: the id may share its memory with a whole cached value.
		pending[strings.Clone(m.id)] = m.at
		if len(pending) >= usageBatch && !failing {
			flush()
		}
	}
	for {
		select {
		case m := <-u.queue:
			add(m)
		case <-t.C:
			flush()
		case <-u.done:
			for {
				select {
				case m := <-u.queue:
					add(m)
				default:
					flush()
					return
				}
			}
		}
	}
}

func (u *usage) close() {
	close(u.done)
	u.wg.Wait()
}
