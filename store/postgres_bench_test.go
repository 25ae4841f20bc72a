package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/store"
)

func benchCreate(s store.Store) error {
	sec := apikey.NewSecret(apikey.Live).Reveal()
	k := &store.Key{ID: apikey.NewID(apikey.Live), WorkspaceID: "ws", Name: "bench", Mode: apikey.Live,
		Scopes: []string{"payment:read"}, IPWhitelist: []string{}, CreatedAt: time.Now().Unix()}
	return s.Create(context.Background(), k, apikey.Hash(sec), store.Event{EventID: "evt_" + k.ID[8:], Action: store.ActionCreated})
}

// BenchmarkPostgres: creates on PostgreSQL (durable: synchronous_commit on,
// the pool at its default 16 connections), sequential and with 32 concurrent
// clients beside the bbolt store measured in the same run; and a lookup that
// misses the cache (the verify hit path is the cache's, identical to bbolt).
func BenchmarkPostgres(b *testing.B) {
	pg := openPostgres(b, freshDB(b))
	b.Cleanup(func() { pg.Close() })
	b.Run("create-sequential", func(b *testing.B) {
		var lat []time.Duration
		for b.Loop() {
			start := time.Now()
			if err := benchCreate(pg); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	})
	b.Run("create-concurrent32-vs-bbolt", func(b *testing.B) {
		const clients, perRound = 32, 2048
		bb := benchStore(b, store.BoltOptions{})
		var pgTime, boltTime time.Duration
		for b.Loop() {
			boltTime += run32(clients, perRound, func(int) error { return benchCreate(bb) })
			pgTime += run32(clients, perRound, func(int) error { return benchCreate(pg) })
		}
		pgRate := float64(b.N*perRound) / pgTime.Seconds()
		boltRate := float64(b.N*perRound) / boltTime.Seconds()
		b.ReportMetric(pgRate, "pg-creates/s")
		b.ReportMetric(boltRate, "bbolt-creates/s")
		b.ReportMetric(pgRate/boltRate, "ratio")
	})
	b.Run("lookup-miss", func(b *testing.B) {
		secrets := fill(b, pg, 1000)
		r := request()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if verify(pg, secrets[i%len(secrets)], r) != apikey.Allow {
				b.Fatal("deny")
			}
			i++
		}
	})
}
