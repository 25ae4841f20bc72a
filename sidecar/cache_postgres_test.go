package sidecar

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/storetest"
)

// The revocation bound when this node cannot hear PostgreSQL: a silent
// partition (no error, no notification) and then the database going down.
// A key revoked elsewhere is served from this node's cache for less than
// 1 s, then lookups fail closed; both heal by themselves.
func TestPostgresBoundWhenDatabaseUnreachable(t *testing.T) {
	t.Parallel()
	dsn := storetest.FreshDatabase(t, storetest.PostgresURL(t, "KEYGATE_TEST_POSTGRES"))
	a := openPostgres(t, dsn)
	defer a.Close()
	proxy, viaProxy := storetest.NewPGProxy(t, dsn)
	b, err := store.OpenPostgres(context.Background(), viaProxy, store.PostgresOptions{OpTimeout: 300 * time.Millisecond, ConnectTimeout: 300 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	cb, err := newCache(b, CacheOptions{NumCounters: 1000, MaxCost: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	var invalidations atomic.Int64
	b.Subscribe(context.Background(), func(string) {
		invalidations.Add(1)
		cb.invalidate()
	})
	ctx := context.Background()
	// settle waits until the listener is subscribed and its lease fresh: no
	// invalidation for 400 ms.
	settle := func() {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for n := invalidations.Load(); ; {
			time.Sleep(400 * time.Millisecond)
			m := invalidations.Load()
			if m == n && m > 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("listener never settled")
			}
			n = m
		}
	}
	newKey := func() ([32]byte, string) {
		t.Helper()
		settle()
		secret := apikey.NewSecret(apikey.Live).Reveal()
		k := &store.Key{ID: apikey.NewID(apikey.Live), WorkspaceID: "ws", Name: "n", Scopes: []string{}, IPWhitelist: []string{}, CreatedAt: time.Now().Unix()}
		if err := a.Create(ctx, k, apikey.Hash(secret), store.Event{EventID: "c" + k.ID, Action: store.ActionCreated}); err != nil {
			t.Fatal(err)
		}
		if _, err := cb.Lookup(ctx, apikey.Hash(secret)); err != nil {
			t.Fatal(err)
		}
		cb.wait()
		return apikey.Hash(secret), k.ID
	}
	// servedFor revokes the key through a and reports how long b still
	// allowed it.
	servedFor := func(h [32]byte, id string) time.Duration {
		t.Helper()
		if f, err := cb.Lookup(ctx, h); err != nil || f.Revoked {
			t.Fatalf("cached key before the revoke: %+v %v", f, err)
		}
		if _, err := a.Revoke(ctx, "ws", id, time.Now().Unix(), store.Event{EventID: "r" + id, Action: store.ActionRevoked}); err != nil {
			t.Fatal(err)
		}
		revoked := time.Now()
		var last time.Duration
		for time.Since(revoked) < 1500*time.Millisecond {
			f, err := cb.Lookup(ctx, h)
			if err == nil && !f.Revoked {
				last = time.Since(revoked)
			} else if err != nil && !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("lookup: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if last > time.Second {
			t.Fatalf("revoked key served %s after the revoke", last)
		}
		return last
	}

	h, id := newKey()
	proxy.SetFrozen(true)
	t.Logf("partitioned: revoked key served for %s", servedFor(h, id))
	if err := b.Ready(ctx); err == nil {
		t.Error("ready while partitioned")
	}
	proxy.SetFrozen(false)
	waitRevoked := func(h [32]byte) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			f, err := cb.Lookup(ctx, h)
			if err == nil && f.Revoked {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no recovery: %+v %v", f, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitRevoked(h)

	h, id = newKey()
	proxy.SetDown(true)
	t.Logf("database down: revoked key served for %s", servedFor(h, id))
	if err := b.Ready(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("ready while down: %v", err)
	}
	k := &store.Key{ID: apikey.NewID(apikey.Live), WorkspaceID: "ws", Name: "n", Scopes: []string{}, IPWhitelist: []string{}}
	if err := b.Create(ctx, k, apikey.Hash("x"), store.Event{EventID: "c", Action: store.ActionCreated}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("create while down: %v", err)
	}
	proxy.SetDown(false)
	waitRevoked(h)
	if err := b.Ready(ctx); err != nil {
		t.Errorf("ready after recovery: %v", err)
	}
}
