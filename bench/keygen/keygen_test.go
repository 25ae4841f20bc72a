package main

import (
	"bufio"
	"context"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/store"
)

// TestKeygen: every secret written opens its key with the given scopes and
// whitelist; the secrets file is private; an existing store is refused.
func TestKeygen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db, secrets := filepath.Join(dir, "k.db"), filepath.Join(dir, "k.txt")
	if err := run([]string{"-n", "250", "-db", db, "-secrets", secrets, "-cidrs", "3", "-per-workspace", "100"}, io.Discard); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(secrets); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secrets file: %v %v", fi, err)
	}
	lines := readLines(t, secrets)
	if len(lines) != 250 {
		t.Fatalf("%d secrets", len(lines))
	}
	s, err := store.OpenBolt(db, store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ws := map[string]int{}
	for _, sec := range lines {
		if _, ok := apikey.ParseSecret(sec); !ok {
			t.Fatalf("malformed secret %q", apikey.Hint(sec))
		}
		f, err := s.Lookup(context.Background(), apikey.Hash(sec))
		if err != nil {
			t.Fatal(err)
		}
		r := &apikey.Request{Now: time.Now().Unix(), RequiredScopes: []string{"payment:write"},
			AllowedModes: apikey.ModesOf(apikey.Live), ClientIP: netip.MustParseAddr("10.2.200.1")}
		if d := apikey.Decide(f, r); d != apikey.Allow || len(f.IPWhitelist) != 3 {
			t.Fatalf("decision %v, whitelist %v", d, f.IPWhitelist)
		}
		ws[f.WorkspaceID]++
	}
	if len(ws) != 3 || ws["bench-ws-000000"] != 100 || ws["bench-ws-000002"] != 50 {
		t.Fatalf("workspaces %v", ws)
	}
	keys, _, err := s.List(context.Background(), "bench-ws-000001", store.Page{Limit: 100})
	if err != nil || len(keys) != 100 {
		t.Fatalf("List: %d keys, %v", len(keys), err)
	}
	evs, _, err := s.Events(context.Background(), "bench-ws-000001", keys[0].ID, store.Page{Limit: 10})
	if err != nil || len(evs) != 1 || evs[0].Action != store.ActionCreated {
		t.Fatalf("Events: %+v %v", evs, err)
	}
	s.Close()
	if err := run([]string{"-n", "1", "-db", db, "-secrets", filepath.Join(dir, "other.txt")}, io.Discard); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("existing store: err = %v", err)
	}
}

func TestKeygenFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no files", []string{}, "-db and -secrets are required"},
		{"zero keys", []string{"-db", "a", "-secrets", "b", "-n", "0"}, "-n must be"},
		{"bad scope", []string{"-db", "a", "-secrets", "b", "-scopes", "Nope"}, "not a valid scope"},
		{"bad mode", []string{"-db", "a", "-secrets", "b", "-mode", "x"}, "-mode"},
		{"too many cidrs", []string{"-db", "a", "-secrets", "b", "-cidrs", "101"}, "-cidrs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := parse(tc.args, io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func readLines(tb testing.TB, path string) []string {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}
