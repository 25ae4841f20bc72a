package plugin

// The plugin → sidecar hop (docs/CONTRACT.md §10.5: p50 ≤ 100 µs per verify round trip;
// a unix socket about twice as fast as TCP loopback): the plugin's own
// client against a real sidecar, over TCP loopback and over a unix socket,
// in the same run. docs/BENCHMARKS.md quotes it.

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/sidecar"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/storetest"
)

const hopGatewaySecret = "hop-bench-gateway-secret-0123456789"

// hopSidecar starts a sidecar listening on listen ("" = a unix socket in a
// temporary directory) with keys keys (2 scopes, no whitelist, as the
// plugin asks without clientIp) and returns the plugin's network and
// address for it and the keys' secrets.
func hopSidecar(b *testing.B, listen string, keys int) (network, addr string, secrets []string) {
	b.Helper()
	dir, err := os.MkdirTemp("", "kghop") // short: unix socket paths are limited to ~108 bytes
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	if listen == "" {
		listen = "unix:" + filepath.Join(dir, "s.sock")
	}
	st, err := store.OpenBolt(filepath.Join(dir, "keygate.db"), store.BoltOptions{})
	if err != nil {
		b.Fatal(err)
	}
	bulk := make([]storetest.BulkKey, keys)
	for i := range bulk {
		sec := apikey.NewSecret(apikey.Live).Reveal()
		secrets = append(secrets, sec)
		bulk[i] = storetest.BulkKey{
			Key: &store.Key{ID: apikey.NewID(apikey.Live), WorkspaceID: "ws1", Name: "hop", Mode: apikey.Live,
				Scopes: []string{"payment:read", "payment:write"}, IPWhitelist: []string{}, CreatedAt: time.Now().Unix(), SecretHint: apikey.Hint(sec)},
			SecretHash: apikey.Hash(sec),
			Event:      store.Event{EventID: "evt_" + apikey.NewID(apikey.Live)[8:], Action: store.ActionCreated, Actor: store.Actor{Admin: true}},
		}
	}
	if err := storetest.BulkCreate(context.Background(), st, bulk); err != nil {
		b.Fatal(err)
	}
	srv, err := sidecar.Start(sidecar.Config{
		Listen:        listen,
		Store:         st,
		GatewaySecret: []byte(hopGatewaySecret),
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Shutdown(context.Background()) })
	if path, ok := strings.CutPrefix(listen, "unix:"); ok {
		return "unix", path, secrets
	}
	return "tcp", srv.Addr().String(), secrets
}

// BenchmarkHop: one verify round trip at a time with the plugin's client
// (sidecarClient.verify: request, sidecar cache hit, answer parsed and
// checked), reporting p50 and p99. Target p50 ≤ 100 µs.
func BenchmarkHop(b *testing.B) {
	const keys = 1000
	for _, tc := range []struct{ name, listen string }{
		{"tcp-loopback", "127.0.0.1:0"},
		{"unix-socket", ""},
	} {
		b.Run(tc.name, func(b *testing.B) {
			network, addr, secrets := hopSidecar(b, tc.listen, keys)
			ep := &sidecarEndpoint{network: network, addr: addr, host: addr}
			if network == "unix" {
				ep.host = "keygate-sidecar"
			}
			c := newSidecarClient(ep)
			tail := verifyTail([]string{"payment:read"}, []string{"LIVE"})
			bearer := []byte("Bearer " + hopGatewaySecret)
			for _, s := range secrets { // warm the connection and the sidecar's cache
				if f, _, err := c.verify(s, "hop", tail, bearer, time.Second); err != nil || f == nil {
					b.Fatal(f, err)
				}
			}
			b.ReportAllocs()
			lat := make([]time.Duration, 0, 1<<16)
			i := 0
			for b.Loop() {
				start := time.Now()
				f, _, err := c.verify(secrets[i%keys], "hop", tail, bearer, time.Second)
				lat = append(lat, time.Since(start))
				if err != nil || f == nil {
					b.Fatal(f, err)
				}
				i++
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
		})
	}
}
