package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/apikey"
	bolt "go.etcd.io/bbolt"
)

// bulkInputs returns n keys over three workspaces with varied fields: the
// arguments Create and bulkCreate are both given.
func bulkInputs(n int) []bulkKey {
	now := time.Now().Unix()
	out := make([]bulkKey, n)
	for i := range out {
		mode := apikey.Live
		if i%4 == 3 {
			mode = apikey.Test
		}
		sec := apikey.NewSecret(mode).Reveal()
		k := &Key{ID: apikey.NewID(mode), WorkspaceID: fmt.Sprintf("ws%d", i%3), Name: fmt.Sprintf("key %d", i), Mode: mode,
			Scopes: []string{"payment:read"}, IPWhitelist: []string{}, CreatedAt: now + int64(i), SecretHint: apikey.Hint(sec)}
		if i%2 == 0 {
			k.IPWhitelist = []string{"10.0.0.0/8", "192.0.2.7"}
		}
		if i%5 == 0 {
			k.ExpiresAt = now + 3600
		}
		ev := Event{EventID: fmt.Sprintf("evt_%04d", i), Action: ActionCreated, Actor: Actor{Sub: "alice", Portal: "PUBLIC"}, RequestID: fmt.Sprint("r", i)}
		if i%3 == 0 {
			ev.Actor = Actor{Admin: true}
		}
		out[i] = bulkKey{Key: k, SecretHash: apikey.Hash(sec), Event: ev}
	}
	return out
}

func cloneInputs(in []bulkKey) []bulkKey {
	out := make([]bulkKey, len(in))
	for i, bk := range in {
		k := *bk.Key
		out[i] = bulkKey{Key: &k, SecretHash: bk.SecretHash, Event: bk.Event}
	}
	return out
}

func openBulkTest(t *testing.T, name string) *Bolt {
	t.Helper()
	b, err := OpenBolt(filepath.Join(t.TempDir(), name), BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// dump is every bucket's sequence and key/value pairs.
func dump(t *testing.T, b *Bolt) string {
	t.Helper()
	var sb strings.Builder
	err := b.db.View(func(tx *bolt.Tx) error {
		for _, name := range buckets {
			bk := tx.Bucket(name)
			fmt.Fprintf(&sb, "bucket %s seq %d\n", name, bk.Sequence())
			if err := bk.ForEach(func(k, v []byte) error {
				fmt.Fprintf(&sb, "%x=%x\n", k, v)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sb.String()
}

func listAll(t *testing.T, s Store, ws, keyID string, events bool) string {
	t.Helper()
	var sb strings.Builder
	cursor := ""
	for {
		var next string
		var err error
		if events {
			var evs []*Event
			evs, next, err = s.Events(context.Background(), ws, keyID, Page{Limit: 3, Cursor: cursor})
			for _, e := range evs {
				fmt.Fprintf(&sb, "%+v\n", *e)
			}
		} else {
			var ks []*Key
			ks, next, err = s.List(context.Background(), ws, Page{Limit: 3, Cursor: cursor})
			for _, k := range ks {
				fmt.Fprintf(&sb, "%+v\n", *k)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		if next == "" {
			return sb.String()
		}
		fmt.Fprintf(&sb, "cursor %s\n", next)
		cursor = next
	}
}

// TestBulkCreateIsCreate: keys bulk-created (over several chunks) leave the
// file byte for byte as the same keys created one by one with Create, and
// read back the same through Lookup, Get, List and Events.
func TestBulkCreateIsCreate(t *testing.T) {
	old := bulkChunk
	bulkChunk = 7
	t.Cleanup(func() { bulkChunk = old })

	in := bulkInputs(23)
	created, bulk := openBulkTest(t, "create.db"), openBulkTest(t, "bulk.db")
	ctx := context.Background()
	for _, bk := range cloneInputs(in) {
		if err := created.Create(ctx, bk.Key, bk.SecretHash, bk.Event); err != nil {
			t.Fatal(err)
		}
	}
	if err := bulk.bulkCreate(ctx, cloneInputs(in)); err != nil {
		t.Fatal(err)
	}
	if a, b := dump(t, created), dump(t, bulk); a != b {
		t.Fatalf("files differ:\ncreate:\n%s\nbulk:\n%s", a, b)
	}
	for _, bk := range in {
		fa, errA := created.Lookup(ctx, bk.SecretHash)
		fb, errB := bulk.Lookup(ctx, bk.SecretHash)
		if errA != nil || errB != nil || !reflect.DeepEqual(fa, fb) {
			t.Fatalf("Lookup %s: create %+v %v, bulk %+v %v", bk.Key.ID, fa, errA, fb, errB)
		}
		ka, errA := created.Get(ctx, bk.Key.WorkspaceID, bk.Key.ID)
		kb, errB := bulk.Get(ctx, bk.Key.WorkspaceID, bk.Key.ID)
		if errA != nil || errB != nil || !reflect.DeepEqual(ka, kb) {
			t.Fatalf("Get %s: create %+v %v, bulk %+v %v", bk.Key.ID, ka, errA, kb, errB)
		}
		if a, b := listAll(t, created, bk.Key.WorkspaceID, bk.Key.ID, true), listAll(t, bulk, bk.Key.WorkspaceID, bk.Key.ID, true); a != b || !strings.Contains(a, "CREATED") {
			t.Fatalf("Events of %s:\ncreate:\n%s\nbulk:\n%s", bk.Key.ID, a, b)
		}
	}
	for ws := range 3 {
		id := fmt.Sprintf("ws%d", ws)
		if a, b := listAll(t, created, id, "", false), listAll(t, bulk, id, "", false); a != b || strings.Count(a, "cursor") < 2 {
			t.Fatalf("List %s:\ncreate:\n%s\nbulk:\n%s", id, a, b)
		}
		if a, b := listAll(t, created, id, "", true), listAll(t, bulk, id, "", true); a != b {
			t.Fatalf("Events %s:\ncreate:\n%s\nbulk:\n%s", id, a, b)
		}
	}
	// A key bulk-created can be revoked and rolled like any other.
	k := in[4].Key
	if _, err := bulk.Revoke(ctx, k.WorkspaceID, k.ID, time.Now().Unix(), Event{EventID: "evt_revoke", Action: ActionRevoked}); err != nil {
		t.Fatal(err)
	}
	if f, err := bulk.Lookup(ctx, in[4].SecretHash); err != nil || !f.Revoked {
		t.Fatalf("after revoke: %+v %v", f, err)
	}
}

// TestBulkCreateConflict: a conflict fails its chunk whole; earlier chunks
// stay, and the error says how many keys were stored.
func TestBulkCreateConflict(t *testing.T) {
	old := bulkChunk
	bulkChunk = 5
	t.Cleanup(func() { bulkChunk = old })

	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		mutate func(in []bulkKey)
	}{
		{"hash repeated in the input", func(in []bulkKey) { in[7].SecretHash = in[1].SecretHash }},
		{"id repeated in the input", func(in []bulkKey) { in[8].Key.ID = in[6].Key.ID }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := openBulkTest(t, "bulk.db")
			in := bulkInputs(12)
			tc.mutate(in)
			err := b.bulkCreate(ctx, in)
			if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "5 of 12 keys stored") {
				t.Fatalf("err = %v", err)
			}
			for i, bk := range in {
				_, err := b.Lookup(ctx, bk.SecretHash)
				if stored := err == nil; stored != (i < 5 || (i == 7 && bk.SecretHash == in[1].SecretHash)) {
					t.Errorf("key %d: stored %v (%v)", i, stored, err)
				}
			}
		})
	}
	t.Run("conflict with a stored key", func(t *testing.T) {
		b := openBulkTest(t, "bulk.db")
		in := bulkInputs(3)
		if err := b.bulkCreate(ctx, cloneInputs(in)); err != nil {
			t.Fatal(err)
		}
		before := dump(t, b)
		if err := b.bulkCreate(ctx, cloneInputs(in[1:2])); !errors.Is(err, ErrConflict) {
			t.Fatalf("err = %v", err)
		}
		if after := dump(t, b); after != before {
			t.Fatal("a failed bulk create changed the file")
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		b := openBulkTest(t, "bulk.db")
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := b.bulkCreate(cctx, bulkInputs(2)); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
		if !strings.Contains(dump(t, b), "bucket keys seq 0\n") {
			t.Fatal("cancelled bulk create stored something")
		}
	})
}
