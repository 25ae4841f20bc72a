package sidecar

import (
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/storetest"
)

// The flusher writes as soon as usageBatch keys have marks, not only on its
// tick: what it holds stays bounded however many keys are in use.
func TestUsageFlushesFullBatchBeforeTick(t *testing.T) {
	t.Parallel()
	b, err := store.OpenBolt(filepath.Join(t.TempDir(), "k.db"), store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := newCache(b, CacheOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	now := time.Now().Unix()
	n := usageBatch + 10
	bulk := make([]storetest.BulkKey, n)
	for i := range bulk {
		bulk[i] = storetest.BulkKey{
			Key:        &store.Key{ID: apikey.NewID(apikey.Live), WorkspaceID: "ws", Name: "k", Mode: apikey.Live, Scopes: []string{"a:b"}, CreatedAt: now},
			SecretHash: sha256.Sum256(fmt.Append(nil, "secret ", i)),
			Event:      store.Event{EventID: fmt.Sprint("e", i), Action: store.ActionCreated},
		}
	}
	if err := storetest.BulkCreate(t.Context(), b, bulk); err != nil {
		t.Fatal(err)
	}
	u := newUsage(c, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer u.close()
	for _, bk := range bulk {
		e, err := c.find(t.Context(), bk.SecretHash)
		if err != nil {
			t.Fatal(err)
		}
		u.used(e, now)
		u.used(e, now) // the same minute again: no second mark
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		written := 0
		for _, bk := range bulk {
			k, err := b.Get(t.Context(), "ws", bk.Key.ID)
			if err != nil {
				t.Fatal(err)
			}
			if k.LastUsedAt == now {
				written++
			}
		}
		if written >= usageBatch {
			if written == n {
				t.Fatalf("all %d marks written before the tick; only full batches should be", n)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d lastUsedAt written an hour before the tick", written, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
