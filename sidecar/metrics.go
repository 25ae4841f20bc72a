package sidecar

import (
	"fmt"
	"io"
	"sort"
	"sync/atomic"
	"time"

	"github.com/keygate/keygate/internal/envelope"
)

// Metric names (Prometheus text format at GET /metrics):
//
//	keygate_verify_total{code}               verify decisions; code "2000" = allowed
//	keygate_management_requests_total{code}  management responses by envelope code
//	keygate_store_seconds{op}                store operation latency (histogram);
//	                                         op "lookup" counts verify cache misses only
//	keygate_push_subscribers                 open invalidation streams (gauge)
//	keygate_push_invalidations_total         invalidations published (key ids and "all")
//	keygate_push_overflows_total             streams cut off for falling behind
//
// Counters are atomics indexed by code: recording one costs no lock and no
// allocation. No label ever carries a key, secret or token.
type metrics struct {
	verify [codeSlots]atomic.Uint64
	manage [codeSlots]atomic.Uint64
	store  map[string]*histogram
	push   *pushHub
}

var codeIndex = func() map[envelope.Code]int {
	m := map[envelope.Code]int{}
	codes := envelope.Codes()
	sort.Slice(codes, func(i, j int) bool { return codes[i] < codes[j] })
	for i, c := range codes {
		m[c] = i
	}
	return m
}()

const codeSlots = 32

var okIndex = codeIndex[envelope.OK]

func init() {
	if len(codeIndex) > codeSlots {
		panic("sidecar: more codes than metric slots")
	}
}

// Store operations that are timed.
var storeOps = []string{"create", "get", "list", "revoke", "roll", "lookup", "record", "events", "touch"}

func newMetrics() *metrics {
	m := &metrics{store: map[string]*histogram{}}
	for _, op := range storeOps {
		m.store[op] = &histogram{}
	}
	return m
}

func (m *metrics) countVerify(c envelope.Code) {
	if c == envelope.OK { // most verify answers: no map lookup
		m.verify[okIndex].Add(1)
		return
	}
	m.verify[codeIndex[c]].Add(1)
}
func (m *metrics) countManage(c envelope.Code) { m.manage[codeIndex[c]].Add(1) }

func (m *metrics) observe(op string, start time.Time) { m.observeDuration(op, time.Since(start)) }

func (m *metrics) observeDuration(op string, d time.Duration) { m.store[op].observe(d.Seconds()) }

// Bucket upper bounds in seconds.
var buckets = [...]float64{0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1}

type histogram struct {
	counts [len(buckets) + 1]atomic.Uint64
	sumNs  atomic.Uint64
}

func (h *histogram) observe(sec float64) {
	i := sort.SearchFloat64s(buckets[:], sec)
	h.counts[i].Add(1)
	h.sumNs.Add(uint64(sec * 1e9))
}

func (m *metrics) write(w io.Writer) {
	codes := make([]envelope.Code, len(codeIndex))
	for c, i := range codeIndex {
		codes[i] = c
	}
	fmt.Fprintln(w, "# HELP keygate_verify_total Verify decisions by outcome code (2000 = allowed).")
	fmt.Fprintln(w, "# TYPE keygate_verify_total counter")
	for i, c := range codes {
		if n := m.verify[i].Load(); n > 0 {
			fmt.Fprintf(w, "keygate_verify_total{code=%q} %d\n", c, n)
		}
	}
	fmt.Fprintln(w, "# HELP keygate_management_requests_total Management API responses by envelope code.")
	fmt.Fprintln(w, "# TYPE keygate_management_requests_total counter")
	for i, c := range codes {
		if n := m.manage[i].Load(); n > 0 {
			fmt.Fprintf(w, "keygate_management_requests_total{code=%q} %d\n", c, n)
		}
	}
	if m.push != nil {
		fmt.Fprintln(w, "# HELP keygate_push_subscribers Open invalidation streams.")
		fmt.Fprintln(w, "# TYPE keygate_push_subscribers gauge")
		fmt.Fprintf(w, "keygate_push_subscribers %d\n", m.push.nsubs.Load())
		fmt.Fprintln(w, "# HELP keygate_push_invalidations_total Invalidations published to the streams (key ids and drop-everything).")
		fmt.Fprintln(w, "# TYPE keygate_push_invalidations_total counter")
		fmt.Fprintf(w, "keygate_push_invalidations_total %d\n", m.push.pushed.Load())
		fmt.Fprintln(w, "# HELP keygate_push_overflows_total Streams disconnected because their subscriber fell behind.")
		fmt.Fprintln(w, "# TYPE keygate_push_overflows_total counter")
		fmt.Fprintf(w, "keygate_push_overflows_total %d\n", m.push.overflows.Load())
	}
	fmt.Fprintln(w, "# HELP keygate_store_seconds Store operation latency.")
	fmt.Fprintln(w, "# TYPE keygate_store_seconds histogram")
	for _, op := range storeOps {
		h := m.store[op]
		var cum uint64
		for i, le := range buckets {
			cum += h.counts[i].Load()
			fmt.Fprintf(w, "keygate_store_seconds_bucket{op=%q,le=\"%g\"} %d\n", op, le, cum)
		}
		cum += h.counts[len(buckets)].Load()
		fmt.Fprintf(w, "keygate_store_seconds_bucket{op=%q,le=\"+Inf\"} %d\n", op, cum)
		fmt.Fprintf(w, "keygate_store_seconds_sum{op=%q} %g\n", op, float64(h.sumNs.Load())/1e9)
		fmt.Fprintf(w, "keygate_store_seconds_count{op=%q} %d\n", op, cum)
	}
}
