package sidecar

import (
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/storetest"
	"github.com/valyala/fasthttp"
)

// BenchmarkHandleVerify is the sidecar's whole verify handler in process —
// request id, path, gateway secret, body, lookup (cache hit), decision with
// a 10-entry whitelist, answer — without the network: the per-request work
// bench/http.sh compares with a bare handler, over as many keys (10,000),
// so an op pays the same CPU-cache misses. Its allocations are the GC's
// share of that comparison.
func BenchmarkHandleVerify(b *testing.B) {
	gw := []byte("bench-gateway-secret-0123456789")
	st, err := store.OpenBolt(filepath.Join(b.TempDir(), "k.db"), store.BoltOptions{})
	if err != nil {
		b.Fatal(err)
	}
	const n = 10000
	secrets := make([]string, n)
	bulk := make([]storetest.BulkKey, n)
	ips := make([]string, 10)
	for i := range ips {
		ips[i] = fmt.Sprintf("10.%d.0.0/16", i)
	}
	for i := range bulk {
		sec := apikey.NewSecret(apikey.Live).Reveal()
		secrets[i] = sec
		bulk[i] = storetest.BulkKey{
			Key: &store.Key{ID: apikey.NewID(apikey.Live), WorkspaceID: "bench-ws", Name: "k", Mode: apikey.Live,
				Scopes: []string{"payment:read", "payment:write"}, IPWhitelist: ips, CreatedAt: 1},
			SecretHash: sha256.Sum256([]byte(sec)),
			Event:      store.Event{EventID: fmt.Sprint("e", i), Action: store.ActionCreated},
		}
	}
	if err := storetest.BulkCreate(b.Context(), st, bulk); err != nil {
		b.Fatal(err)
	}
	s, err := Start(Config{Listen: "127.0.0.1:0", Store: st, GatewaySecret: gw,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Shutdown(b.Context())
	reqs := make([]fasthttp.Request, n)
	for i := range reqs {
		r := &reqs[i]
		r.Header.SetMethod("POST")
		r.SetRequestURI("/internal/v1/verify")
		r.Header.Set("Authorization", "Bearer "+string(gw))
		r.Header.Set("X-Request-Id", "wrk")
		r.SetBodyString(`{"key":"` + secrets[i] + `","clientIp":"10.9.200.1","requiredScopes":["payment:write"],"allowedModes":["LIVE"]}`)
	}
	var ctx fasthttp.RequestCtx
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	serve := func(i int) {
		ctx.Init(&reqs[i%n], addr, nil)
		s.handle(&ctx)
		if ctx.Response.StatusCode() != 200 {
			b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
	for i := range 2 * n { // learn the tail, fill the cache
		serve(i)
	}
	s.cache.wait()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		serve(i)
		i++
	}
}
