package plugin

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keygate/keygate/internal/apikey"
)

// The invalidation stream (docs/REVOCATION.md). Each plugin process keeps
// at most one subscription per sidecar (per cache namespace, the sidecar
// URL), shared by every instance naming it, started on the first request
// that uses it and run by a goroutine of its own: no PDK call, nothing on
// the request path but two atomic loads. The sidecar writes a line per
// event: "ping" (a heartbeat, every 100 ms), "key <apiKeyId>" or "all".
//
// While the stream is live, facts fetched under it are cached for
// cache_ttl_pushed_ms; an entry is fresh only while its last confirmation
// (its fetch, or the last line read on the stream it was fetched under) is
// younger than its cache_ttl_ms. So the moment lines stop arriving — the
// stream lost, the sidecar restarted, stalled or frozen — every entry is
// back under the ≤ 1 s rule, counted from the last line read.
const (
	// streamSilence: a subscription that reads nothing for this long is
	// closed and opened again (ten heartbeats missed).
	streamSilence = time.Second
	// streamDialTimeout bounds connecting and reading the answer's head.
	streamDialTimeout = time.Second
	// streamBackoffMin, streamBackoffMax bound the wait before a new
	// attempt, doubling on each failure and jittered (half to all of it).
	streamBackoffMin = 50 * time.Millisecond
	streamBackoffMax = 2 * time.Second
	// streamIdle: a stream no request used for this long is closed (its
	// goroutine ends; the next request starts it again).
	streamIdle = 10 * time.Minute
	// maxStreamLine caps one line ("key " + an id is 27 bytes).
	maxStreamLine = 128
)

// invalidationsPath is the sidecar's stream (sidecar.InvalidationsPath).
const invalidationsPath = "/internal/v1/invalidations"

// mono0 is the base of the monotonic nanoseconds the cache and the stream
// compare.
var mono0 = time.Now()

func monoNs(t time.Time) int64 { return int64(t.Sub(mono0)) }

// pushStream is the subscription of one plugin process to one sidecar.
type pushStream struct {
	ns     string           // the cache namespace: the sidecar URL
	ep     *sidecarEndpoint // dials every connection (TLS when https)
	bearer []byte

	mu      sync.Mutex // orders start and the goroutine's end
	running bool
	used    atomic.Bool  // a request used the stream since the goroutine last looked
	lastUse atomic.Int64 // monoNs when the goroutine last saw used

	// seq changes on every invalidation read and every (re)subscription; a
	// fetch that saw it change caches its answer under cache_ttl_ms only.
	seq atomic.Uint64
	// epoch identifies the current subscription (0: none yet); entries
	// fetched under another are not covered by this one.
	epoch atomic.Uint64
	// beat is monoNs of the last line read on the current subscription.
	beat atomic.Int64
	up   atomic.Bool
	// report is a state change for kong.log, taken by the next request
	// (takeReport): a loss, and the return after a loss. The stream's
	// goroutine has no request to call the PDK with, and Kong drops the
	// plugin's stderr at its default log level.
	report   atomic.Pointer[streamReport]
	reported bool // a loss was reported (only the goroutine touches it)
}

// streamReport is one state change to say through kong.log.
type streamReport struct {
	level   kongLevel
	subject string
	msg     string
}

// takeReport returns the pending state change, once; nil in steady state
// (one atomic load).
func (st *pushStream) takeReport() *streamReport {
	p := st.report.Load()
	if p == nil || !st.report.CompareAndSwap(p, nil) {
		return nil
	}
	return p
}

var streams sync.Map // cache namespace → *pushStream

// streamFor returns the process's stream of one sidecar.
func streamFor(ns string, ep *sidecarEndpoint, bearer []byte) *pushStream {
	if st, ok := streams.Load(ns); ok {
		return st.(*pushStream)
	}
	st, _ := streams.LoadOrStore(ns, &pushStream{ns: ns, ep: ep, bearer: bearer})
	return st.(*pushStream)
}

// touch marks the stream used and starts it when it is not running: on
// the request path, one atomic load in steady state.
func (st *pushStream) touch() {
	if !st.used.Load() {
		st.used.Store(true)
		st.mu.Lock()
		if !st.running {
			st.running = true
			go st.run()
		}
		st.mu.Unlock()
	}
}

// covered reports the subscription an entry fetched now may rely on, and
// the sequence to compare when it is stored (see factsCache.put).
func (st *pushStream) covered() (epoch, seq uint64) {
	seq = st.seq.Load()
	if !st.up.Load() {
		return 0, seq
	}
	return st.epoch.Load(), seq
}

// run subscribes, reads, and subscribes again with jittered backoff, until
// no request has used the stream for streamIdle.
func (st *pushStream) run() {
	backoff := streamBackoffMin
	st.lastUse.Store(monoNs(time.Now()))
	for {
		wasUp, err := st.session()
		if st.up.Swap(false) {
			logger().Warn("keygate: invalidation stream lost; cached facts fall back to cache_ttl_ms", "sidecar", st.ns, "err", errString(err))
			st.reported = true
			st.report.Store(&streamReport{kongWarn, "stream-lost|" + st.ns,
				"keygate: invalidation stream from the key service at " + st.ns + " lost (" + errString(err) +
					"); cached key facts fall back to cache_ttl_ms until it is back"})
		} else if err != nil {
			logger().Debug("keygate: invalidation stream not available", "sidecar", st.ns, "err", err.Error())
		}
		if wasUp {
			backoff = streamBackoffMin
		}
		if st.idle(time.Now()) {
			st.mu.Lock()
			if !st.used.Load() {
				st.running = false
				st.mu.Unlock()
				return
			}
			st.mu.Unlock()
		}
		time.Sleep(backoff/2 + rand.N(backoff/2+1))
		backoff = min(2*backoff, streamBackoffMax)
	}
}

// idle reports whether no request has used the stream for streamIdle.
func (st *pushStream) idle(now time.Time) bool {
	if st.used.Swap(false) {
		st.lastUse.Store(monoNs(now))
		return false
	}
	return monoNs(now)-st.lastUse.Load() > int64(streamIdle)
}

func errString(err error) string {
	if err == nil {
		return "closed"
	}
	return err.Error()
}

var errStreamIdle = errors.New("unused")

// session opens one subscription and reads it until it fails, falls
// silent for streamSilence, or no request used it for streamIdle. wasUp
// reports whether it was established.
func (st *pushStream) session() (wasUp bool, err error) {
	// The endpoint's dial: TLS (certificate verified) when sidecar_url is
	// https, so the bearer below never crosses the network in clear.
	conn, err := st.ep.dialTimeout(streamDialTimeout)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(streamDialTimeout))
	var req bytes.Buffer
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: keygate-plugin\r\nAuthorization: ", invalidationsPath, st.ep.host)
	req.Write(st.bearer)
	req.WriteString("\r\n\r\n")
	if _, err := conn.Write(req.Bytes()); err != nil {
		return false, err
	}
	br := bufio.NewReaderSize(conn, 512)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		return false, err
	}
	defer res.Body.Close()
	switch res.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized:
		return false, errors.New("the sidecar refused the gateway secret (401)")
	default:
		return false, fmt.Errorf("sidecar answered status %d", res.StatusCode)
	}
	lr := bufio.NewReaderSize(res.Body, maxStreamLine)
	for {
		conn.SetReadDeadline(time.Now().Add(streamSilence))
		line, err := lr.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				err = errors.New("stream line too long")
			} else if err == io.EOF {
				err = errors.New("stream ended")
			}
			return wasUp, err
		}
		now := time.Now()
		switch kind, id := parseStreamLine(line); kind {
		case linePing:
			if !wasUp {
				// A new subscription: what was missed cannot be known.
				st.seq.Add(1)
				st.epoch.Add(1)
				sharedCache.dropNS(st.ns)
				wasUp = true
				st.beat.Store(monoNs(now))
				st.up.Store(true)
				logger().Info("keygate: invalidation stream live; cached facts live for cache_ttl_pushed_ms", "sidecar", st.ns)
				if st.reported { // the first subscription is no news; a return after a loss is
					st.reported = false
					st.report.Store(&streamReport{kongNotice, "stream-live|" + st.ns,
						"keygate: invalidation stream from the key service at " + st.ns + " is live again; cached key facts live for cache_ttl_pushed_ms"})
				}
			}
		case lineKey:
			st.seq.Add(1)
			sharedCache.dropKey(st.ns, id)
		default: // "all", or a line this plugin does not understand
			st.seq.Add(1)
			sharedCache.dropNS(st.ns)
		}
		if wasUp {
			st.beat.Store(monoNs(now))
		}
		if st.idle(now) {
			return wasUp, errStreamIdle
		}
	}
}

// Stream line kinds.
const (
	lineBad = iota
	linePing
	lineKey
	lineAll
)

// parseStreamLine reads one line of the stream, its newline included. A
// line it does not understand is lineBad, which the reader treats as "all".
func parseStreamLine(b []byte) (kind int, id string) {
	b, ok := bytes.CutSuffix(b, []byte("\n"))
	if !ok {
		return lineBad, ""
	}
	switch {
	case string(b) == "ping":
		return linePing, ""
	case string(b) == "all":
		return lineAll, ""
	}
	if rest, ok := bytes.CutPrefix(b, []byte("key ")); ok && apikey.ValidID(string(rest)) {
		return lineKey, string(rest)
	}
	return lineBad, ""
}
