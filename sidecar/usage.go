package sidecar

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/keygate/keygate/store"
)

// usage records lastUsedAt off the verify path. Each cached lookup carries
// the last minute its use was marked (store.Entry.MarkUsed); only the first
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
func (u *usage) used(e *store.Entry, now int64) {
	minute := now / 60
	prev, first := e.MarkUsed(minute)
	if !first {
		return
	}
	select {
	case u.queue <- mark{e.Facts.APIKeyID, now}:
	default:
		e.UnmarkUsed(minute, prev) // queue full: try again on the next use
	}
}

func (u *usage) flusher(st store.Store, every time.Duration, log *slog.Logger) {
	defer u.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	pending := map[string]int64{}
	flush := func() {
		if len(pending) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := st.TouchLastUsed(ctx, pending); err != nil {
			log.Warn("lastUsedAt flush failed", "keys", len(pending), "err", err)
			return // kept for the next tick
		}
		pending = map[string]int64{}
	}
	for {
		select {
		case m := <-u.queue:
			if m.at > pending[m.id] {
				pending[m.id] = m.at
			}
		case <-t.C:
			flush()
		case <-u.done:
			for {
				select {
				case m := <-u.queue:
					if m.at > pending[m.id] {
						pending[m.id] = m.at
					}
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
