package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/keygate/keygate/store/storetest"
)

// PostgreSQL for these tests comes from .ci/run:
//
//	KEYGATE_TEST_POSTGRES              a role with CREATEDB (each test makes its own database)
//	KEYGATE_TEST_POSTGRES_RESTARTABLE  the same on a cluster only TestSeveralNodesPostgresRestart uses
//	KEYGATE_TEST_POSTGRES_RESTART      the command that restarts that cluster
//
// Unset, the tests skip; under CI they fail.
func pgEnv(t *testing.T, name string) string { return storetest.PostgresURL(t, name) }

// call sends one request and returns the status, the envelope's code and
// its data.
func call(method, addr, path, auth, body string) (int, string, map[string]any, error) {
	req, _ := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+auth)
	req.Header.Set("Content-Type", "application/json")
	c := http.Client{Timeout: 5 * time.Second}
	res, err := c.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var env struct {
		Code string         `json:"code"`
		Data map[string]any `json:"data"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return res.StatusCode, "", nil, fmt.Errorf("%d %s", res.StatusCode, raw)
	}
	return res.StatusCode, env.Code, env.Data, nil
}

// verdict of a verify: "allow", "deny" or "unavailable" (503/5030).
func verdict(t *testing.T, addr, secret string) string {
	t.Helper()
	status, code, data, err := call("POST", addr, "/internal/v1/verify", gw, fmt.Sprintf(`{"key":%q,"requiredScopes":["orders:read"]}`, secret))
	switch {
	case err != nil:
		t.Fatalf("verify: %v", err)
	case status == 503 && code == "5030":
		return "unavailable"
	case status != 200:
		t.Fatalf("verify: %d %s", status, code)
	case data["allow"] == true:
		return "allow"
	}
	return "deny"
}

func createKey(t *testing.T, addr string) (id, secret string) {
	t.Helper()
	status, code, data, err := call("POST", addr, "/web/v1/workspaces/ws/api-keys", admin, `{"name":"k","scopes":["orders:read"]}`)
	if err != nil || status != 201 {
		t.Fatalf("create: %d %s %v", status, code, err)
	}
	return data["apiKeyId"].(string), data["secret"].(string)
}

func revokeKey(t *testing.T, addr, id string) time.Time {
	t.Helper()
	status, code, _, err := call("DELETE", addr, "/web/v1/workspaces/ws/api-keys/"+id, admin, "")
	if err != nil || status != 200 {
		t.Fatalf("revoke: %d %s %v", status, code, err)
	}
	return time.Now()
}

// rejectedWithin polls verify on addr until the key is no longer allowed
// and fails when it still was after bound. It returns how long it took.
func rejectedWithin(t *testing.T, addr, secret string, since time.Time, bound time.Duration) time.Duration {
	t.Helper()
	for {
		v := verdict(t, addr, secret)
		if v != "allow" {
			return time.Since(since)
		}
		if time.Since(since) > bound {
			t.Fatalf("revoked key still allowed %s after the revoke", time.Since(since))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ready(addr string) bool {
	c := http.Client{Timeout: 3 * time.Second}
	res, err := c.Get("http://" + addr + "/readyz")
	if err != nil {
		return false
	}
	res.Body.Close()
	return res.StatusCode == 200
}

func eventually(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// Two sidecars on one database: what A creates B verifies at once, what A
// revokes B rejects within 1 s — also when B's LISTEN connection is killed
// and cannot come back, and when the database is unreachable for B, in which
// case B fails closed and honours the revoke made meanwhile once it is back.
func TestSeveralNodesPostgres(t *testing.T) {
	t.Parallel()
	dsn := storetest.FreshDatabase(t, pgEnv(t, "KEYGATE_TEST_POSTGRES"))
	proxy, viaProxy := storetest.NewPGProxy(t, dsn)
	dir := t.TempDir()
	a := launch(t, filepath.Join(dir, "a.db"), env, "--store", dsn)
	b := launch(t, filepath.Join(dir, "b.db"), env, "--store", viaProxy)
	ctx := context.Background()
	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	// settle lets B's listener connect and its lease become fresh.
	settle := func() {
		t.Helper()
		eventually(t, "B's LISTEN connection", 10*time.Second, func() bool {
			var n int
			db.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
				fmt.Sprintf("keygate-sidecar listen pid=%d", b.cmd.Process.Pid)).Scan(&n)
			return n == 1
		})
		time.Sleep(500 * time.Millisecond)
	}

	t.Run("created on A verifies on B at once", func(t *testing.T) {
		_, secret := createKey(t, a.addr)
		if v := verdict(t, b.addr, secret); v != "allow" {
			t.Fatalf("B: %s", v)
		}
	})

	t.Run("revoked on A is rejected by B within 1 s", func(t *testing.T) {
		settle()
		id, secret := createKey(t, a.addr)
		for range 3 { // cached on B
			if v := verdict(t, b.addr, secret); v != "allow" {
				t.Fatalf("B before revoke: %s", v)
			}
		}
		took := rejectedWithin(t, b.addr, secret, revokeKey(t, a.addr, id), time.Second)
		if v := verdict(t, b.addr, secret); v != "deny" {
			t.Fatalf("B after revoke: %s", v)
		}
		t.Logf("B rejected the revoked key after %s", took)
	})

	t.Run("B's listener killed and kept away", func(t *testing.T) {
		settle()
		id, secret := createKey(t, a.addr)
		if v := verdict(t, b.addr, secret); v != "allow" {
			t.Fatalf("B before: %s", v)
		}
		proxy.SetRefuseNew(true) // B's open pool connections stay; nothing new gets through
		var killed int
		if err := db.QueryRow(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
			fmt.Sprintf("keygate-sidecar listen pid=%d", b.cmd.Process.Pid)).Scan(&killed); err != nil || killed != 1 {
			t.Fatalf("terminate B's listener: %d %v", killed, err)
		}
		took := rejectedWithin(t, b.addr, secret, revokeKey(t, a.addr, id), time.Second)
		t.Logf("B, not listening, stopped allowing the revoked key after %s", took)
		proxy.SetRefuseNew(false)
		settle()
		if v := verdict(t, b.addr, secret); v != "deny" {
			t.Fatalf("B after re-subscribing: %s", v)
		}
	})

	t.Run("database unreachable for B", func(t *testing.T) {
		settle()
		id, secret := createKey(t, a.addr)
		if v := verdict(t, b.addr, secret); v != "allow" {
			t.Fatalf("B before: %s", v)
		}
		proxy.SetDown(true)
		down := time.Now()
		// Cached verification continues at most 1 s, then fails closed.
		for time.Since(down) < 1500*time.Millisecond {
			v := verdict(t, b.addr, secret)
			if v == "allow" && time.Since(down) > time.Second {
				t.Fatalf("B allowed from its cache %s into the outage", time.Since(down))
			}
			if v == "deny" {
				t.Fatal("B denied a valid key during the outage")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if v := verdict(t, b.addr, secret); v != "unavailable" {
			t.Fatalf("B during the outage: %s", v)
		}
		eventually(t, "B's readyz to fail", 3*time.Second, func() bool { return !ready(b.addr) })
		if status, code, _, _ := call("POST", b.addr, "/web/v1/workspaces/ws/api-keys", admin, `{"name":"k","scopes":["orders:read"]}`); status != 503 || code != "5030" {
			t.Fatalf("create on B during the outage: %d %s", status, code)
		}
		revokeKey(t, a.addr, id) // while B is cut off
		proxy.SetDown(false)
		eventually(t, "B ready again", 15*time.Second, func() bool { return ready(b.addr) })
		if v := verdict(t, b.addr, secret); v != "deny" {
			t.Fatalf("B after the outage: %s", v)
		}
		_, s2 := createKey(t, b.addr)
		if v := verdict(t, a.addr, s2); v != "allow" {
			t.Fatalf("key created on B after the outage, on A: %s", v)
		}
	})
}

// A real restart of PostgreSQL (pg_ctlcluster … restart) under two sidecars:
// both recover without a restart of their own and keep the 1 s bound.
func TestSeveralNodesPostgresRestart(t *testing.T) {
	t.Parallel()
	dsn := storetest.FreshDatabase(t, pgEnv(t, "KEYGATE_TEST_POSTGRES_RESTARTABLE"))
	restart := pgEnv(t, "KEYGATE_TEST_POSTGRES_RESTART")
	dir := t.TempDir()
	a := launch(t, filepath.Join(dir, "a.db"), env, "--store", dsn)
	b := launch(t, filepath.Join(dir, "b.db"), env, "--store", dsn)
	id1, s1 := createKey(t, a.addr)
	if v := verdict(t, b.addr, s1); v != "allow" {
		t.Fatalf("B before restart: %s", v)
	}
	if out, err := exec.Command("sh", "-c", restart).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", restart, err, out)
	}
	for _, p := range []*proc{a, b} {
		eventually(t, "sidecar ready after the restart", 20*time.Second, func() bool { return ready(p.addr) })
	}
	// Let B's listener re-subscribe (backoff) and its lease become fresh.
	time.Sleep(2500 * time.Millisecond)
	id2, s2 := createKey(t, a.addr)
	for _, s := range []string{s1, s2} {
		if v := verdict(t, b.addr, s); v != "allow" {
			t.Fatalf("B after restart: %s", v)
		}
	}
	for _, k := range []struct{ id, secret string }{{id1, s1}, {id2, s2}} {
		took := rejectedWithin(t, b.addr, k.secret, revokeKey(t, a.addr, k.id), time.Second)
		t.Logf("after the restart B rejected a revoked key after %s", took)
	}
}

// A --store that cannot be used stops the sidecar at once with a clear
// message and never prints the password.
func TestStoreFlagRefusesToStart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, store, want string }{
		{"not a postgres URL", "mysql://u:pw@127.0.0.1/db", "--store must be a postgres:// or postgresql:// URL"},
		{"unreachable", "postgres://u:hunter2hunter2@127.0.0.1:1/db?connect_timeout=1", "open key store postgres://u@127.0.0.1:1/db"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(bin, "--listen", freeAddr(t), "--store", tc.store)
			cmd.Env = append(os.Environ(), env...)
			start := time.Now()
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) || strings.Contains(string(out), "hunter2") {
				t.Fatalf("err %v, output %s", err, out)
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("took %s to refuse", time.Since(start))
			}
		})
	}
}
