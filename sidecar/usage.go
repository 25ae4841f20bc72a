package sidecar

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keygate/keygate/store"
)

// usage records lastUsedAt off the verify path: each key's last recorded
// minute sits in an atomic; only the first use of a key in a minute sends
// its id to the flusher (a non-blocking send; when the queue is full the
// mark is dropped and retried on the next use). The flusher writes the
// coalesced marks every interval and on close. A crash loses at most the
// marks of the last interval, never a key.
type usage struct {
	last  sync.Map // apiKeyId → *atomic.Int64 (Unix minute)
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

func (u *usage) used(id string, now int64) {
	minute := now / 60
	v, ok := u.last.Load(id)
	if !ok {
		v, _ = u.last.LoadOrStore(id, new(atomic.Int64))
	}
	slot := v.(*atomic.Int64)
	old := slot.Load()
	if old >= minute || !slot.CompareAndSwap(old, minute) {
		return
	}
	select {
	case u.queue <- mark{id, now}:
	default:
		slot.CompareAndSwap(minute, old) // queue full: try again on the next use
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
		// Forget keys not used in the last minute, so the map holds the
		// keys in use, not every key ever used. A use racing the delete
		// at worst sends one more mark for the same minute.
		cutoff := time.Now().Unix()/60 - 1
		u.last.Range(func(k, v any) bool {
			if v.(*atomic.Int64).Load() < cutoff {
				u.last.Delete(k)
			}
			return true
		})
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
