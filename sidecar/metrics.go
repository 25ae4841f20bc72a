package sidecar

import (
	"sort"
	"time"

	"github.com/keygate/keygate/internal/envelope"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// Metrics are served at GET /metrics by prometheus/client_golang (text or
// OpenMetrics as the scraper asks, gzip when it accepts it), from a
// registry of the sidecar's own (docs/INTERNALS.md says why the library):
//
//	keygate_verify_total{code}               verify decisions; code "2000" = allowed
//	keygate_management_requests_total{code}  management responses by envelope code
//	keygate_store_seconds{op}                store operation latency (histogram);
//	                                         op "lookup" counts verify cache misses only
//	keygate_push_subscribers                 open invalidation streams (gauge)
//	keygate_push_invalidations_total         invalidations published (key ids and "all")
//	keygate_push_overflows_total             streams cut off for falling behind
//	go_*, process_*                          the Go runtime and process collectors
//
// Every series of the code-labelled counters and of the store histogram is
// resolved when the server starts (WithLabelValues), so counting one is an
// array index and an atomic add: no map, no lock, no allocation on the
// verify path. Every code of the table is shown from the start, at 0. No
// label ever carries a key, secret or token.
type metrics struct {
	verify [codeSlots]prometheus.Counter
	manage [codeSlots]prometheus.Counter
	store  map[string]prometheus.Observer
	serve  fasthttp.RequestHandler
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

// Bucket upper bounds in seconds.
var buckets = []float64{0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1}

// newMetrics registers the sidecar's metrics, the push hub's and the Go
// runtime and process collectors in a registry of its own.
func newMetrics(push *pushHub) *metrics {
	reg := prometheus.NewRegistry()
	verify := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keygate_verify_total", Help: "Verify decisions by outcome code (2000 = allowed).",
	}, []string{"code"})
	manage := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keygate_management_requests_total", Help: "Management API responses by envelope code.",
	}, []string{"code"})
	store := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "keygate_store_seconds", Help: "Store operation latency.", Buckets: buckets,
	}, []string{"op"})
	reg.MustRegister(verify, manage, store,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &metrics{store: map[string]prometheus.Observer{}}
	for c, i := range codeIndex {
		m.verify[i] = verify.WithLabelValues(string(c))
		m.manage[i] = manage.WithLabelValues(string(c))
	}
	for _, op := range storeOps {
		m.store[op] = store.WithLabelValues(op)
	}
	if push != nil {
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "keygate_push_subscribers", Help: "Open invalidation streams.",
			}, func() float64 { return float64(push.nsubs.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "keygate_push_invalidations_total", Help: "Invalidations published to the streams (key ids and drop-everything).",
			}, func() float64 { return float64(push.pushed.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "keygate_push_overflows_total", Help: "Streams disconnected because their subscriber fell behind.",
			}, func() float64 { return float64(push.overflows.Load()) }))
	}
	m.serve = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	return m
}

func (m *metrics) countVerify(c envelope.Code) {
	if c == envelope.OK { // most verify answers: no map lookup
		m.verify[okIndex].Inc()
		return
	}
	m.verify[codeIndex[c]].Inc()
}
func (m *metrics) countManage(c envelope.Code) { m.manage[codeIndex[c]].Inc() }

func (m *metrics) observe(op string, start time.Time) { m.observeDuration(op, time.Since(start)) }

func (m *metrics) observeDuration(op string, d time.Duration) { m.store[op].Observe(d.Seconds()) }
