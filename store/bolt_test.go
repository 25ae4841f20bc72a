package store_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/storetest"
)

func openBolt(t *testing.T) *store.Bolt {
	t.Helper()
	b, err := store.OpenBolt(filepath.Join(t.TempDir(), "sub", "keygate.db"), store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBoltConformance(t *testing.T) {
	t.Parallel()
	storetest.Exercise(t, func(t *testing.T) store.Store { return openBolt(t) })
}

func TestBoltLockedByAnotherHandle(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "keygate.db")
	b, err := store.OpenBolt(path, store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	start := time.Now()
	_, err = store.OpenBolt(path, store.BoltOptions{LockTimeout: 200 * time.Millisecond})
	if err == nil || !contains(err.Error(), "locked by another process") || !contains(err.Error(), path) {
		t.Fatalf("second open: %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("lock wait took %s", time.Since(start))
	}
}

func TestBoltMaxSizeIsFull(t *testing.T) {
	t.Parallel()
	b, err := store.OpenBolt(filepath.Join(t.TempDir(), "k.db"), store.BoltOptions{MaxSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	var full bool
	for i := 0; i < 20000 && !full; i++ {
		k := &store.Key{ID: apikey.NewID(apikey.Live), WorkspaceID: "ws", Name: string(make([]byte, 100)), Scopes: []string{}, IPWhitelist: []string{}}
		err := b.Create(ctx, k, apikey.Hash(string(apikey.NewSecret(apikey.Live))), store.Event{EventID: "e" + k.ID, Action: store.ActionCreated})
		if errors.Is(err, store.ErrFull) {
			full = true
			if _, gerr := b.Get(ctx, "ws", k.ID); !errors.Is(gerr, store.ErrNotFound) {
				t.Fatalf("a create that failed for room left its key: %v", gerr)
			}
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if !full {
		t.Fatal("never reported full")
	}
	if err := b.Ready(ctx); err != nil {
		t.Fatalf("store not usable after full: %v", err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// Key records written before hashes were stored as base64 (an array of 32
// numbers) still read, and rewrite in the new form.
func TestSecretHashReadsBothForms(t *testing.T) {
	t.Parallel()
	h := apikey.Hash(apikey.NewSecret(apikey.Live).Reveal())
	var arr []string
	for _, b := range h {
		arr = append(arr, strconv.Itoa(int(b)))
	}
	for _, raw := range []string{
		`{"id":"x","secrets":[{"h":[` + strings.Join(arr, ",") + `],"u":5}]}`,
		`{"id":"x","secrets":[{"h":"` + base64.StdEncoding.EncodeToString(h[:]) + `","u":5}]}`,
	} {
		var k store.Key
		if err := json.Unmarshal([]byte(raw), &k); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		if len(k.Secrets) != 1 || [32]byte(k.Secrets[0].Hash) != h || k.Secrets[0].Until != 5 {
			t.Fatalf("%s → %+v", raw, k.Secrets)
		}
		out, _ := json.Marshal(k.Secrets[0])
		if !strings.Contains(string(out), `"h":"`+base64.StdEncoding.EncodeToString(h[:])+`"`) {
			t.Fatalf("rewritten as %s", out)
		}
	}
	var bad store.SecretRef
	if err := json.Unmarshal([]byte(`{"h":"c2hvcnQ="}`), &bad); err == nil {
		t.Fatal("short hash accepted")
	}
}
