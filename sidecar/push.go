package sidecar

import (
	"bufio"
	"container/heap"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/internal/envelope"
	"github.com/valyala/fasthttp"
)

// The invalidation stream (docs/REVOCATION.md): GET
// /internal/v1/invalidations with the gateway secret answers 200 with a
// chunked text/plain body that never ends on its own, one line per event:
//
//	ping            a heartbeat, every HeartbeatInterval: every line queued
//	                before it has been written before it
//	key <apiKeyId>  drop every cached fact of this key id
//	all             drop every cached fact of this sidecar
//
// The first line is a ping. A subscriber whose buffer of pending lines is
// full (it does not read) is disconnected, never waited for: a revoke never
// blocks on a slow subscriber, and the plugin, seeing no heartbeat, falls
// back to the 1 s rule and resubscribes.
const (
	// InvalidationsPath is the stream's path.
	InvalidationsPath = "/internal/v1/invalidations"
	// HeartbeatInterval is how often a ping is written.
	HeartbeatInterval = 100 * time.Millisecond
	// pushBuffer is how many lines may wait for one subscriber.
	pushBuffer = 1024
	// pushWriteStall bounds one write to a subscriber's connection: one that
	// takes longer (the peer's window stays shut) ends the stream.
	pushWriteStall = time.Second
	// maxExpiries bounds the expiry timers (about 64 bytes each).
	maxExpiries = 1 << 16
)

// Stream lines.
const (
	linePing = "ping\n"
	lineAll  = "all\n"
)

// pushHub fans invalidations out to the plugins' streams.
type pushHub struct {
	mu     sync.Mutex
	subs   map[*subscriber]struct{}
	closed bool

	pushed    atomic.Uint64 // invalidations published (keys and "all")
	overflows atomic.Uint64 // subscribers cut off for falling behind
	nsubs     atomic.Int64

	exp     expiries
	expSet  map[expiry]struct{} // what exp holds, to add each once
	expMu   sync.Mutex
	expT    *time.Timer
	expDone chan struct{}
}

type subscriber struct {
	ch   chan string
	done chan struct{}
	once sync.Once
}

func (s *subscriber) end() { s.once.Do(func() { close(s.done) }) }

func newPushHub() *pushHub {
	h := &pushHub{subs: map[*subscriber]struct{}{}, expSet: map[expiry]struct{}{}, expDone: make(chan struct{})}
	h.expT = time.AfterFunc(time.Hour, h.fireExpiries)
	h.expT.Stop()
	return h
}

// subscribe registers a subscriber; nil once the hub is closed.
func (h *pushHub) subscribe() *subscriber {
	s := &subscriber{ch: make(chan string, pushBuffer), done: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	h.subs[s] = struct{}{}
	h.nsubs.Add(1)
	return s
}

func (h *pushHub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	if _, ok := h.subs[s]; ok {
		delete(h.subs, s)
		h.nsubs.Add(-1)
	}
	h.mu.Unlock()
	s.end()
}

// publish queues line for every subscriber without waiting: one whose
// buffer is full is disconnected.
func (h *pushHub) publish(line string) {
	h.pushed.Add(1)
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		select {
		case s.ch <- line:
		default:
			delete(h.subs, s)
			h.nsubs.Add(-1)
			h.overflows.Add(1)
			s.end()
		}
	}
}

// key publishes the invalidation of one key id.
func (h *pushHub) key(id string) {
	if !apikey.ValidID(id) { // never anything else on the wire
		h.publish(lineAll)
		return
	}
	h.publish("key " + id + "\n")
}

// all publishes "drop everything".
func (h *pushHub) all() { h.publish(lineAll) }

// close ends every stream and the expiry timer.
func (h *pushHub) close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	for s := range h.subs {
		delete(h.subs, s)
		h.nsubs.Add(-1)
		s.end()
	}
	h.mu.Unlock()
	h.expMu.Lock()
	h.expT.Stop()
	close(h.expDone)
	h.expMu.Unlock()
}

// stream writes one subscriber's lines until it ends, its peer goes away or
// a write stalls.
func (h *pushHub) stream(s *subscriber, conn net.Conn) func(w *bufio.Writer) {
	return func(w *bufio.Writer) {
		defer h.unsubscribe(s)
		t := time.NewTicker(HeartbeatInterval)
		defer t.Stop()
		flush := func() bool {
			if conn != nil {
				conn.SetWriteDeadline(time.Now().Add(pushWriteStall))
			}
			return w.Flush() == nil
		}
		// drain writes the lines queued so far: a ping written after it
		// vouches for every line published before it.
		drain := func() {
			for {
				select {
				case l := <-s.ch:
					w.WriteString(l)
				default:
					return
				}
			}
		}
		w.WriteString(linePing)
		if !flush() {
			return
		}
		for {
			select {
			case <-s.done:
				return
			case l := <-s.ch:
				w.WriteString(l)
				drain()
			case <-t.C:
				drain()
				w.WriteString(linePing)
			}
			if !flush() {
				return
			}
		}
	}
}

// handleInvalidations serves the invalidation stream.
func (s *Server) handleInvalidations(ctx *fasthttp.RequestCtx, rid string) {
	if !equalSecret(bearer(ctx), s.cfg.GatewaySecret) {
		reply(ctx, rid, envelope.Unauthorized, "", nil)
		return
	}
	sub := s.push.subscribe()
	if sub == nil {
		reply(ctx, rid, envelope.Unavailable, "", nil)
		return
	}
	ctx.Response.Header.SetContentType("text/plain; charset=utf-8")
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.Response.Header.Set("X-Request-Id", rid)
	ctx.Response.ImmediateHeaderFlush = true
	ctx.SetConnectionClose()
	// The stream sets its own write deadline per flush (fasthttp's
	// WriteTimeout would end it after 10 s).
	ctx.SetWriteDeadline(time.Now().Add(pushWriteStall))
	ctx.SetBodyStreamWriter(s.push.stream(sub, ctx.Conn()))
}

// Expiry timers: a key's facts served with an expiry (the key's own, or a
// rolled-out secret's window) get a timer that publishes the key id when it
// passes, so that a plugin drops them even if its clock is behind the
// sidecar's (the plugin also decides expiry itself from expiresAt). The
// timers are fed from the verify cache's misses, so a hit costs nothing;
// at most maxExpiries are kept, the nearest first.

type expiry struct {
	at int64 // Unix seconds
	id string
}

type expiries []expiry

func (e expiries) Len() int           { return len(e) }
func (e expiries) Less(i, j int) bool { return e[i].at < e[j].at }
func (e expiries) Swap(i, j int)      { e[i], e[j] = e[j], e[i] }
func (e *expiries) Push(x any)        { *e = append(*e, x.(expiry)) }
func (e *expiries) Pop() any {
	old := *e
	x := old[len(old)-1]
	*e = old[:len(old)-1]
	return x
}

// watchExpiry schedules the push of id at at (Unix seconds).
func (h *pushHub) watchExpiry(id string, at int64) {
	if at == 0 || at <= time.Now().Unix() {
		return
	}
	e := expiry{at: at, id: id}
	h.expMu.Lock()
	defer h.expMu.Unlock()
	select {
	case <-h.expDone:
		return
	default:
	}
	if _, ok := h.expSet[e]; ok {
		return
	}
	if len(h.exp) >= maxExpiries {
		// Full: keep the nearest. Dropping the latest one is a linear scan,
		// rare (only with this many expiring keys in use).
		last := 0
		for i := range h.exp {
			if h.exp[i].at > h.exp[last].at {
				last = i
			}
		}
		if at >= h.exp[last].at {
			return
		}
		delete(h.expSet, heap.Remove(&h.exp, last).(expiry))
	}
	heap.Push(&h.exp, e)
	h.expSet[e] = struct{}{}
	if h.exp[0].at == at {
		h.expT.Reset(time.Until(time.Unix(at, 0)))
	}
}

// fireExpiries publishes every expiry that has passed and re-arms the timer.
func (h *pushHub) fireExpiries() {
	h.expMu.Lock()
	now := time.Now()
	var due []string
	for len(h.exp) > 0 && !now.Before(time.Unix(h.exp[0].at, 0)) {
		e := heap.Pop(&h.exp).(expiry)
		delete(h.expSet, e)
		due = append(due, e.id)
	}
	if len(h.exp) > 0 {
		h.expT.Reset(time.Until(time.Unix(h.exp[0].at, 0)))
	}
	h.expMu.Unlock()
	for _, id := range due {
		h.key(id)
	}
}
