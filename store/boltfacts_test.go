package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/apikey"
	bolt "go.etcd.io/bbolt"
)

func cidrs16(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("10.%d.0.0/16", i)
	}
	return out
}

// factsKeys are keys of every shape a hashes value has to carry.
func factsKeys() map[string]*Key {
	id := apikey.NewID(apikey.Live)
	long := func(c byte, n int) string { return strings.Repeat(string(c), n) }
	maxScopes := make([]string, apikey.MaxScopes)
	for i := range maxScopes {
		maxScopes[i] = fmt.Sprintf("s%03d:", i) + long('x', apikey.MaxScopeLen-5)
	}
	maxIPs := make([]string, apikey.MaxIPWhitelist)
	for i := range maxIPs {
		maxIPs[i] = fmt.Sprintf("2001:db8:%x::/48", i)
	}
	return map[string]*Key{
		"bench shape": {ID: id, WorkspaceID: "bench-ws-000001", Mode: apikey.Live,
			Scopes: []string{"payment:read", "payment:write"}, IPWhitelist: cidrs16(10)},
		"null scopes and whitelist": {ID: id, WorkspaceID: "ws", Mode: apikey.Test},
		"empty scopes and whitelist": {ID: id, WorkspaceID: "ws", Mode: apikey.Live, Scopes: []string{},
			IPWhitelist: []string{}},
		"single IPv4 and odd prefix lengths": {ID: id, WorkspaceID: "ws", Mode: apikey.Live, Scopes: []string{"a:b"},
			IPWhitelist: []string{"192.0.2.7", "198.51.100.0/25", "10.0.0.0/8", "0.0.0.0/0", "172.16.0.0/12"}},
		"IPv6": {ID: id, WorkspaceID: "ws", Mode: apikey.Live, Scopes: []string{"a:b"},
			IPWhitelist: []string{"2001:db8::/32", "2001:db8::1", "::/0", "fe80::/10", "::ffff:1.2.3.0/120", "::ffff:1.2.3.4", "2001:db8:0:1::/64", "::"}},
		"zone (Facts drops it)": {ID: id, WorkspaceID: "ws", IPWhitelist: []string{"fe80::1%eth0"}},
		"expires":               {ID: id, WorkspaceID: "ws", Mode: apikey.Live, Scopes: []string{"a:b"}, ExpiresAt: 1_800_000_000},
		"expired long ago":      {ID: id, WorkspaceID: "ws", Mode: apikey.Live, ExpiresAt: 1},
		"far future":            {ID: id, WorkspaceID: "ws", Mode: apikey.Live, ExpiresAt: 1 << 62},
		"negative expiry":       {ID: id, WorkspaceID: "ws", Mode: apikey.Live, ExpiresAt: -5},
		"revoked":               {ID: id, WorkspaceID: "ws", Mode: apikey.Live, RevokedAt: 1_700_000_000, IPWhitelist: []string{"10.0.0.0/8"}},
		"revoked and expires":   {ID: id, WorkspaceID: "ws", Mode: apikey.Test, RevokedAt: 3, ExpiresAt: 2},
		"limits": {ID: id, WorkspaceID: long('w', apikey.MaxWorkspaceIDLen), Mode: apikey.Live,
			Scopes: maxScopes, IPWhitelist: maxIPs},
		"empty workspace": {ID: id, Mode: apikey.Live, Scopes: []string{""}},
	}
}

// TestFactsValueIsFacts: decoding a hashes value gives exactly what
// Key.Facts gives for the key and window it was written from.
func TestFactsValueIsFacts(t *testing.T) {
	t.Parallel()
	for name, k := range factsKeys() {
		for _, until := range []int64{0, 1_600_000_000, 1_800_000_000, 1_900_000_000, 1} {
			v, err := appendFactsValue([]byte("prefix"), k, until)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if !bytes.HasPrefix(v, []byte("prefix")) {
				t.Fatalf("%s: dst not appended to", name)
			}
			v = v[len("prefix"):]
			if len(v) <= hashHead || string(v[:apikey.IDLen]) != k.ID || int64(binary.BigEndian.Uint64(v[apikey.IDLen:])) != until || v[hashHead] != byte(k.Mode) {
				t.Fatalf("%s: head % x", name, v[:hashHead+1])
			}
			want, err := k.Facts(until)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeFactsValue(v)
			if err != nil {
				t.Fatalf("%s until %d: %v", name, until, err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s until %d:\n got %#v\nwant %#v", name, until, got, want)
			}
		}
	}
}

// TestFactsValueRefusesUnstorable: a key whose facts the decoder would
// refuse is not written: Create fails and stores nothing.
func TestFactsValueRefusesUnstorable(t *testing.T) {
	t.Parallel()
	b := openBulkTest(t, "k.db")
	id := apikey.NewID(apikey.Live)
	for name, k := range map[string]*Key{
		"non-canonical whitelist": {ID: id, WorkspaceID: "ws", IPWhitelist: []string{"10.0.0.1/8"}},
		"short id":                {ID: "sk_live_x", WorkspaceID: "ws"},
		"long workspace":          {ID: id, WorkspaceID: strings.Repeat("w", apikey.MaxWorkspaceIDLen+1)},
		"too many scopes":         {ID: id, WorkspaceID: "ws", Scopes: make([]string, apikey.MaxScopes+1)},
		"long scope":              {ID: id, WorkspaceID: "ws", Scopes: []string{strings.Repeat("s", apikey.MaxScopeLen+1)}},
		"too many whitelist":      {ID: id, WorkspaceID: "ws", IPWhitelist: cidrs16(apikey.MaxIPWhitelist + 1)},
	} {
		if v, err := appendFactsValue(nil, k, 7); err == nil {
			t.Errorf("%s: encoded as % x", name, v)
		}
		h := apikey.Hash(name)
		if err := b.Create(context.Background(), k, h, Event{EventID: "e", Action: ActionCreated}); err == nil {
			t.Errorf("%s: created", name)
		}
		if _, err := b.Get(context.Background(), "", k.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: stored: %v", name, err)
		}
		if _, err := b.Lookup(context.Background(), h); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: its hash stored: %v", name, err)
		}
	}
}

// TestFactsValueCorrupt: a truncated or corrupt hashes value is an error,
// never a panic or wrong facts.
func TestFactsValueCorrupt(t *testing.T) {
	t.Parallel()
	for name, k := range factsKeys() {
		v, err := appendFactsValue(nil, k, 5)
		if err != nil {
			t.Fatal(err)
		}
		for n := range len(v) {
			if f, err := decodeFactsValue(v[:n]); err == nil {
				t.Fatalf("%s cut to %d of %d bytes: %+v", name, n, len(v), f)
			}
		}
		if f, err := decodeFactsValue(append(v[:len(v):len(v)], 0)); err == nil {
			t.Fatalf("%s with a trailing byte: %+v", name, f)
		}
	}
	id := apikey.NewID(apikey.Live)
	v, err := appendFactsValue(nil, &Key{ID: id}, 0)
	if err != nil {
		t.Fatal(err)
	}
	head := v[:hashHead]
	body := func(b ...byte) []byte { return append(append(append([]byte{}, head...), 1, 0, 0), b...) }
	for name, v := range map[string][]byte{
		"workspace past the end": body(10, 'w', 0, 0),
		"workspace over limit":   body(append([]byte{65}, strings.Repeat("w", 65)+"\x00\x00"...)...),
		"too many scopes":        body(0, 66, 0),
		"scope past the end":     body(0, 2, 5, 'a', 0),
		"scope over limit":       body(append([]byte{0, 2, 0x81, 1}, strings.Repeat("s", 129)+"\x00"...)...),
		"too many whitelist":     body(0, 0, 101),
		"IPv4 over 32 bits":      body(0, 0, 1, 33<<1, 1, 2, 3, 4, 5),
		"IPv6 over 128 bits":     body(0, 0, 1, 0x83, 0x02), // uvarint 259: IPv6, 129 bits
		"address past the end":   body(0, 0, 1, 16<<1, 10),
		"prefix not masked":      body(0, 0, 1, 9<<1, 10, 1),
		"bad uvarint":            body(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
		"count overflows int":    body(0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
	} {
		if f, err := decodeFactsValue(v); err == nil {
			t.Errorf("%s: %+v", name, f)
		}
	}
	if _, err := decodeFactsValue(body(0, 0, 1, 8<<1, 10)); err != nil {
		t.Fatalf("the corruption cases' base does not decode: %v", err)
	}
}

func FuzzDecodeFactsValue(f *testing.F) {
	for _, k := range factsKeys() {
		v, err := appendFactsValue(nil, k, 9)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		fa, err := decodeFactsValue(v)
		if err != nil {
			return
		}
		if len(fa.Scopes) > apikey.MaxScopes || len(fa.IPWhitelist) > apikey.MaxIPWhitelist {
			t.Fatalf("over the limits: %+v", fa)
		}
		for _, p := range fa.IPWhitelist {
			if !p.IsValid() || p.Masked() != p {
				t.Fatalf("bad prefix %v", p)
			}
		}
	})
}

// TestFactsValueAllocs: decoding the facts of the benchmark's key (two
// scopes, ten CIDRs) takes four allocations: the strings, the facts, the
// scopes and the whitelist.
func TestFactsValueAllocs(t *testing.T) {
	v, err := appendFactsValue(nil, factsKeys()["bench shape"], 0)
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { decodeFactsValue(v) }); n > 4 {
		t.Fatalf("%v allocations", n)
	}
}

// checkHashes fails unless every hashes value gives the facts of its key
// record, and returns the number of values.
func checkHashes(t *testing.T, b *Bolt) int {
	t.Helper()
	n := 0
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bHashes).ForEach(func(h, v []byte) error {
			n++
			got, err := decodeFactsValue(v)
			if err != nil {
				return fmt.Errorf("hash %x: %v", h, err)
			}
			k, err := getKey(tx, "", string(v[:apikey.IDLen]))
			if err != nil {
				return err
			}
			want, err := k.Facts(int64(binary.BigEndian.Uint64(v[apikey.IDLen:])))
			if err != nil {
				return err
			}
			if !reflect.DeepEqual(got, want) {
				return fmt.Errorf("hash %x:\nvalue  %+v\nrecord %+v", h, got, want)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func secretHash(i int) [32]byte { return apikey.Hash(fmt.Sprint("secret ", i)) }

// TestBoltWritesKeepFacts: after every kind of write, each hashes value
// holds the facts of its key record.
func TestBoltWritesKeepFacts(t *testing.T) {
	t.Parallel()
	b := openBulkTest(t, "k.db")
	ctx := context.Background()
	now := time.Now().Unix()
	var keys []*Key
	for i, k := range []*Key{
		{WorkspaceID: "ws", Mode: apikey.Live, Scopes: []string{"a:b"}, IPWhitelist: []string{"10.0.0.0/8", "2001:db8::1"}},
		{WorkspaceID: "ws", Mode: apikey.Test, Scopes: []string{}, IPWhitelist: []string{}, ExpiresAt: now + 3600},
		{WorkspaceID: "ws2", Mode: apikey.Live, Scopes: []string{"a:b", "c:d"}, IPWhitelist: cidrs16(3)},
	} {
		k.ID, k.CreatedAt = apikey.NewID(k.Mode), now
		if err := b.Create(ctx, k, secretHash(i), Event{EventID: fmt.Sprint("c", i), Action: ActionCreated}); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	in := bulkInputs(5)
	if err := b.bulkCreate(ctx, in); err != nil {
		t.Fatal(err)
	}
	checkHashes(t, b)
	roll := func(k *Key, secret int, window int64) {
		t.Helper()
		if _, err := b.Roll(ctx, k.WorkspaceID, k.ID, secretHash(secret), "hint", now, now+window, Event{EventID: fmt.Sprint("r", secret), Action: ActionRolled}); err != nil {
			t.Fatal(err)
		}
		checkHashes(t, b)
	}
	roll(keys[0], 10, 600) // two secrets
	roll(keys[0], 11, 300) // three, the windows shortened
	roll(keys[1], 12, 7200)
	roll(keys[2], 13, 60)
	roll(keys[2], 14, 0) // the old secrets dropped
	if n := checkHashes(t, b); n != 3+2+1+5 {
		t.Fatalf("%d hashes", n)
	}
	// Revoking a key rewrites the values of all its secrets.
	for _, k := range []*Key{keys[0], keys[1], in[2].Key} {
		if _, err := b.Revoke(ctx, k.WorkspaceID, k.ID, now, Event{EventID: "v" + k.ID, Action: ActionRevoked}); err != nil {
			t.Fatal(err)
		}
		checkHashes(t, b)
	}
	for _, h := range [][32]byte{secretHash(0), secretHash(10), secretHash(11), secretHash(1), secretHash(12), in[2].SecretHash} {
		if f, err := b.Lookup(ctx, h); err != nil || !f.Revoked {
			t.Fatalf("after revoke: %+v %v", f, err)
		}
	}
	if f, err := b.Lookup(ctx, secretHash(10)); err != nil || f.ExpiresAt != now+300 {
		t.Fatalf("rolled-out secret: %+v %v", f, err)
	}
	if err := b.TouchLastUsed(ctx, map[string]int64{keys[2].ID: now}); err != nil {
		t.Fatal(err)
	}
	if n := checkHashes(t, b); n != 3+2+1+5 {
		t.Fatalf("%d hashes", n)
	}
}

// lastUsedAt is written to its own bucket: a flush leaves every key record
// (and so its pages) untouched, never moves a key's back, and Get and List
// show it.
func TestTouchLastUsedLeavesRecords(t *testing.T) {
	b := openBulkTest(t, "k.db")
	ctx := context.Background()
	in := bulkInputs(5)
	if err := b.bulkCreate(ctx, in); err != nil {
		t.Fatal(err)
	}
	records := func() string {
		var sb strings.Builder
		b.db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(bKeys).ForEach(func(k, v []byte) error {
				fmt.Fprintf(&sb, "%s=%s\n", k, v)
				return nil
			})
		})
		return sb.String()
	}
	before := records()
	if err := b.TouchLastUsed(ctx, map[string]int64{in[0].Key.ID: 1000, in[1].Key.ID: 800, in[2].Key.ID: 1000}); err != nil {
		t.Fatal(err)
	}
	if err := b.TouchLastUsed(ctx, map[string]int64{in[2].Key.ID: 999}); err != nil { // never moves back
		t.Fatal(err)
	}
	if records() != before {
		t.Fatal("a lastUsedAt flush rewrote key records")
	}
	want := map[*Key]int64{in[0].Key: 1000, in[1].Key: 800, in[2].Key: 1000, in[3].Key: 0}
	for key, at := range want {
		k, err := b.Get(ctx, key.WorkspaceID, key.ID)
		if err != nil {
			t.Fatal(err)
		}
		if k.LastUsedAt != at {
			t.Fatalf("get %s: lastUsedAt %d, want %d", key.ID, k.LastUsedAt, at)
		}
		keys, _, err := b.List(ctx, key.WorkspaceID, Page{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, k := range keys {
			if k.ID == key.ID {
				found = true
				if k.LastUsedAt != at {
					t.Fatalf("list %s: lastUsedAt %d, want %d", k.ID, k.LastUsedAt, at)
				}
			}
		}
		if !found {
			t.Fatalf("list misses %s", key.ID)
		}
	}
}
