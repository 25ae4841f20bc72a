// Package storetest is the conformance suite every store.Store backend
// passes: Exercise(t, open) runs it against fresh stores made by open. It
// also holds the PostgreSQL fixtures the store and sidecar tests share
// (PostgresURL, FreshDatabase, PGProxy).
package storetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/store"
)

// Exercise runs the suite. open returns a new, empty store; it is closed by
// the suite.
func Exercise(t *testing.T, open func(t *testing.T) store.Store) {
	t.Helper()
	tests := []struct {
		name string
		run  func(t *testing.T, s store.Store)
	}{
		{"create get lookup", testCreateGetLookup},
		{"create conflict stores nothing", testConflict},
		{"workspaces are isolated", testIsolation},
		{"list pages newest first", testList},
		{"revoke is idempotent", testRevoke},
		{"roll keeps old secret for its window", testRoll},
		{"roll of revoked key", testRollRevoked},
		{"events", testEvents},
		{"last used", testLastUsed},
		{"closed", testClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			defer s.Close()
			tc.run(t, s)
		})
	}
}

var ctx = context.Background()

func hash(i int) [32]byte { return sha256.Sum256(fmt.Appendf(nil, "secret-%d", i)) }

func newKey(ws string, i int) *store.Key {
	return &store.Key{
		ID:          apikey.NewID(apikey.Live),
		WorkspaceID: ws,
		Name:        fmt.Sprintf("key %d", i),
		Mode:        apikey.Live,
		Scopes:      []string{"payment:read"},
		IPWhitelist: []string{"10.0.0.0/8"},
		CreatedAt:   time.Now().Unix(),
		SecretHint:  "sk_live_…abcd",
	}
}

func ev(action string) store.Event {
	return store.Event{EventID: "evt_" + apikey.NewID(apikey.Live)[8:], Action: action, Actor: store.Actor{Sub: "u1", Portal: "PARTNER"}, RequestID: "req-1"}
}

func mustCreate(t *testing.T, s store.Store, ws string, i int) *store.Key {
	t.Helper()
	k := newKey(ws, i)
	if err := s.Create(ctx, k, hash(i), ev(store.ActionCreated)); err != nil {
		t.Fatalf("create: %v", err)
	}
	return k
}

func testCreateGetLookup(t *testing.T, s store.Store) {
	k := mustCreate(t, s, "ws1", 1)
	got, err := s.Get(ctx, "ws1", k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != k.Name || got.Mode != apikey.Live || len(got.Scopes) != 1 || got.IPWhitelist[0] != "10.0.0.0/8" || got.CreatedAt != k.CreatedAt {
		t.Fatalf("get = %+v", got)
	}
	f, err := s.Lookup(ctx, hash(1))
	if err != nil {
		t.Fatal(err)
	}
	if f.APIKeyID != k.ID || f.WorkspaceID != "ws1" || f.Revoked || len(f.IPWhitelist) != 1 {
		t.Fatalf("lookup = %+v", f)
	}
	if _, err := s.Lookup(ctx, hash(2)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("lookup unknown: %v", err)
	}
	if _, err := s.Get(ctx, "ws1", apikey.NewID(apikey.Live)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get unknown: %v", err)
	}
}

func testConflict(t *testing.T, s store.Store) {
	k := mustCreate(t, s, "ws1", 1)
	dup := newKey("ws1", 2)
	dup.ID = k.ID
	if err := s.Create(ctx, dup, hash(2), ev(store.ActionCreated)); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("dup id: %v", err)
	}
	if _, err := s.Lookup(ctx, hash(2)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("conflicting create left its hash: %v", err)
	}
	keys, _, _ := s.List(ctx, "ws1", store.Page{Limit: 10})
	evs, _, _ := s.Events(ctx, "ws1", "", store.Page{Limit: 10})
	if len(keys) != 1 || len(evs) != 1 {
		t.Fatalf("after conflict: %d keys, %d events", len(keys), len(evs))
	}
}

func testIsolation(t *testing.T, s store.Store) {
	k := mustCreate(t, s, "ws1", 1)
	if _, err := s.Get(ctx, "ws2", k.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get from other workspace: %v", err)
	}
	if _, err := s.Revoke(ctx, "ws2", k.ID, 1, ev(store.ActionRevoked)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoke from other workspace: %v", err)
	}
	if keys, _, _ := s.List(ctx, "ws2", store.Page{Limit: 10}); len(keys) != 0 {
		t.Fatalf("list other workspace: %d", len(keys))
	}
	if evs, _, _ := s.Events(ctx, "ws2", k.ID, store.Page{Limit: 10}); len(evs) != 0 {
		t.Fatalf("events of other workspace's key: %d", len(evs))
	}
	// A workspace whose id is a prefix of another's sees only its own.
	mustCreate(t, s, "ws10", 2)
	if keys, _, _ := s.List(ctx, "ws1", store.Page{Limit: 10}); len(keys) != 1 {
		t.Fatalf("prefix workspace leak: %d", len(keys))
	}
}

func testList(t *testing.T, s store.Store) {
	var ids []string
	for i := range 7 {
		ids = append(ids, mustCreate(t, s, "ws1", i).ID)
	}
	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		keys, next, err := s.List(ctx, "ws1", store.Page{Limit: 3, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			got = append(got, k.ID)
		}
		if next == "" {
			if pages != 2 {
				t.Fatalf("pages = %d", pages+1)
			}
			break
		}
		cursor = next
	}
	if len(got) != 7 {
		t.Fatalf("listed %d", len(got))
	}
	for i := range got {
		if got[i] != ids[6-i] {
			t.Fatalf("order: got %v want reverse of %v", got, ids)
		}
	}
	if _, _, err := s.List(ctx, "ws1", store.Page{Limit: 3, Cursor: "%%%"}); !errors.Is(err, store.ErrCursor) {
		t.Fatalf("bad cursor: %v", err)
	}
	keys, next, _ := s.List(ctx, "ws1", store.Page{Limit: 7})
	if len(keys) != 7 || next != "" {
		t.Fatalf("exact page: %d %q", len(keys), next)
	}
}

func testRevoke(t *testing.T, s store.Store) {
	k := mustCreate(t, s, "ws1", 1)
	got, err := s.Revoke(ctx, "ws1", k.ID, 1000, ev(store.ActionRevoked))
	if err != nil || got.RevokedAt != 1000 {
		t.Fatalf("revoke: %v %+v", err, got)
	}
	got, err = s.Revoke(ctx, "ws1", k.ID, 2000, ev(store.ActionRevoked))
	if err != nil || got.RevokedAt != 1000 {
		t.Fatalf("second revoke: %v %+v", err, got)
	}
	f, err := s.Lookup(ctx, hash(1))
	if err != nil || !f.Revoked {
		t.Fatalf("lookup revoked: %v %+v", err, f)
	}
	evs, _, _ := s.Events(ctx, "ws1", k.ID, store.Page{Limit: 10})
	if len(evs) != 2 || evs[0].Action != store.ActionRevoked || evs[1].Action != store.ActionCreated {
		t.Fatalf("events: %+v", evs)
	}
}

func testRoll(t *testing.T, s store.Store) {
	k := mustCreate(t, s, "ws1", 1)
	now := time.Now().Unix()
	if _, err := s.Roll(ctx, "ws1", k.ID, hash(2), "sk_live_…new2", now, now+60, ev(store.ActionRolled)); err != nil {
		t.Fatal(err)
	}
	old, err := s.Lookup(ctx, hash(1))
	if err != nil || old.ExpiresAt != now+60 {
		t.Fatalf("old secret: %v %+v", err, old)
	}
	cur, err := s.Lookup(ctx, hash(2))
	if err != nil || cur.ExpiresAt != 0 || cur.APIKeyID != k.ID {
		t.Fatalf("new secret: %v %+v", err, cur)
	}
	// A second roll with no window closes both earlier secrets.
	got, err := s.Roll(ctx, "ws1", k.ID, hash(3), "sk_live_…new3", now, now, ev(store.ActionRolled))
	if err != nil || got.SecretHint != "sk_live_…new3" {
		t.Fatalf("roll 2: %v %+v", err, got)
	}
	for _, i := range []int{1, 2} {
		if _, err := s.Lookup(ctx, hash(i)); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("secret %d after roll without window: %v", i, err)
		}
	}
	if _, err := s.Lookup(ctx, hash(3)); err != nil {
		t.Fatal(err)
	}
}

func testRollRevoked(t *testing.T, s store.Store) {
	k := mustCreate(t, s, "ws1", 1)
	if _, err := s.Revoke(ctx, "ws1", k.ID, 1, ev(store.ActionRevoked)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Roll(ctx, "ws1", k.ID, hash(2), "h", 2, 2, ev(store.ActionRolled)); !errors.Is(err, store.ErrRevoked) {
		t.Fatalf("roll revoked: %v", err)
	}
	if _, err := s.Lookup(ctx, hash(2)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refused roll stored its hash: %v", err)
	}
}

func testEvents(t *testing.T, s store.Store) {
	k1 := mustCreate(t, s, "ws1", 1)
	k2 := mustCreate(t, s, "ws1", 2)
	d := ev(store.ActionDenied)
	d.WorkspaceID, d.Code = "ws1", "4031"
	if err := s.Record(ctx, d); err != nil {
		t.Fatal(err)
	}
	all, next, err := s.Events(ctx, "ws1", "", store.Page{Limit: 2})
	if err != nil || len(all) != 2 || next == "" {
		t.Fatalf("page 1: %v %d %q", err, len(all), next)
	}
	if all[0].Action != store.ActionDenied || all[0].Code != "4031" || all[1].APIKeyID != k2.ID {
		t.Fatalf("order: %+v %+v", all[0], all[1])
	}
	rest, next, _ := s.Events(ctx, "ws1", "", store.Page{Limit: 2, Cursor: next})
	if len(rest) != 1 || next != "" || rest[0].APIKeyID != k1.ID {
		t.Fatalf("page 2: %+v %q", rest, next)
	}
	one, _, _ := s.Events(ctx, "ws1", k1.ID, store.Page{Limit: 10})
	if len(one) != 1 || one[0].Actor.Sub != "u1" || one[0].Actor.Portal != "PARTNER" || one[0].RequestID != "req-1" || one[0].At == 0 || one[0].EventID == "" {
		t.Fatalf("key events: %+v", one)
	}
}

func testLastUsed(t *testing.T, s store.Store) {
	k := mustCreate(t, s, "ws1", 1)
	if err := s.TouchLastUsed(ctx, map[string]int64{k.ID: 500, "sk_live_00000000000000": 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchLastUsed(ctx, map[string]int64{k.ID: 400}); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Get(ctx, "ws1", k.ID)
	if got.LastUsedAt != 500 {
		t.Fatalf("lastUsedAt = %d", got.LastUsedAt)
	}
}

func testClosed(t *testing.T, s store.Store) {
	s.Close()
	if _, err := s.Get(ctx, "ws1", "x"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("get after close: %v", err)
	}
	if err := s.Create(ctx, newKey("ws1", 1), hash(1), ev(store.ActionCreated)); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("create after close: %v", err)
	}
}
