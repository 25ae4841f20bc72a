package store_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/storetest"
	bolt "go.etcd.io/bbolt"
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

// A secret hash is base64 in a key record; anything else (the array of
// numbers of development builds, a hash of another length) is refused.
func TestSecretHashJSON(t *testing.T) {
	t.Parallel()
	h := apikey.Hash(apikey.NewSecret(apikey.Live).Reveal())
	b64 := base64.StdEncoding.EncodeToString(h[:])
	out, err := json.Marshal(store.SecretRef{Hash: h, Until: 5})
	if err != nil || string(out) != `{"h":"`+b64+`","u":5}` {
		t.Fatalf("marshal: %s %v", out, err)
	}
	var ref store.SecretRef
	if err := json.Unmarshal(out, &ref); err != nil || [32]byte(ref.Hash) != h || ref.Until != 5 {
		t.Fatalf("round trip: %+v %v", ref, err)
	}
	long := base64.StdEncoding.EncodeToString(append(h[:], 1))
	for _, raw := range []string{
		`{"h":[` + strings.Repeat("1,", 31) + `1]}`,
		`{"h":"c2hvcnQ="}`,
		`{"h":"` + long + `"}`,
		`{"h":"not base64!"}`,
	} {
		var bad store.SecretRef
		if err := json.Unmarshal([]byte(raw), &bad); err == nil {
			t.Errorf("%s accepted as %x", raw, bad.Hash)
		}
	}
}

// writeFile makes a bbolt file at path holding the given buckets and, when
// version is not nil, the meta bucket's version value.
func writeFile(t *testing.T, path string, version []byte, buckets ...string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range buckets {
			if _, err := tx.CreateBucket([]byte(b)); err != nil {
				return err
			}
		}
		if version != nil {
			m, err := tx.CreateBucketIfNotExists([]byte("meta"))
			if err != nil {
				return err
			}
			return m.Put([]byte("version"), version)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A new file gets the format version; a file of another version, of none
// (a development build's) or of an unreadable one is refused with a message
// naming the file, what it holds and what this build reads, and is left
// byte for byte as it was.
func TestBoltFormatVersion(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fresh := filepath.Join(dir, "new.db")
	b, err := store.OpenBolt(fresh, store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	db, err := bolt.Open(fresh, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte("meta")).Get([]byte("version")); len(v) != 4 || binary.BigEndian.Uint32(v) != store.FormatVersion {
			t.Errorf("new file's version % x, want %d", v, store.FormatVersion)
		}
		return nil
	})
	db.Close()
	if b, err := store.OpenBolt(fresh, store.BoltOptions{}); err != nil { // and reopens
		t.Fatalf("reopen: %v", err)
	} else {
		b.Close()
	}

	want := fmt.Sprintf("this keygate reads version %d", store.FormatVersion)
	for _, tc := range []struct {
		name    string
		version []byte
		buckets []string
		says    string
	}{
		{"a later version", binary.BigEndian.AppendUint32(nil, store.FormatVersion+1), []string{"keys", "hashes"}, fmt.Sprintf("format version %d,", store.FormatVersion+1)},
		{"version 0", binary.BigEndian.AppendUint32(nil, 0), nil, "format version 0,"},
		{"no version (a development build's file)", nil, []string{"keys", "hashes", "wsidx", "events", "kevents", "used"}, "no format version"},
		{"a meta bucket without a version", nil, []string{"meta", "keys"}, "no format version"},
		{"an unreadable version", []byte("1"), nil, "format version unreadable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "k.db")
			writeFile(t, path, tc.version, tc.buckets...)
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			b, err := store.OpenBolt(path, store.BoltOptions{})
			if err == nil {
				b.Close()
				t.Fatal("opened")
			}
			for _, s := range []string{path, tc.says, want} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
			if after, err := os.ReadFile(path); err != nil || !bytes.Equal(after, before) {
				t.Fatalf("the refused file changed (%v)", err)
			}
			// Refused again, not half converted.
			if b, err := store.OpenBolt(path, store.BoltOptions{}); err == nil {
				b.Close()
				t.Fatal("opened the second time")
			}
		})
	}
}
