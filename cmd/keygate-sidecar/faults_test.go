package main_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// mountTmpfs mounts a small tmpfs (root only) so the disk can really fill.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("mount tmpfs: %v %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs here (%v): %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// A full filesystem answers 507/5070, stores nothing partial, keeps serving
// reads and verifies, and recovers by itself once space is free again.
func TestDiskFullAnswers507AndRecovers(t *testing.T) {
	dir := mountTmpfs(t, "4m")
	db := filepath.Join(dir, "keygate.db")
	p := launch(t, db, env)
	// Take most of the remaining space.
	var st syscall.Statfs_t
	syscall.Statfs(dir, &st)
	filler := filepath.Join(dir, "filler")
	free := int64(st.Bavail) * int64(st.Bsize)
	if err := os.WriteFile(filler, make([]byte, free-96<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	var acked []string
	full := false
	for i := 0; i < 5000 && !full; i++ {
		code, data, err := post(p.addr, "/web/v1/workspaces/ws/api-keys", admin, fmt.Sprintf(`{"name":"%s-%d","scopes":["orders:read"]}`, strings.Repeat("n", 100), i))
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		switch code {
		case 201:
			acked = append(acked, data["secret"].(string))
		case 507:
			full = true
		default:
			t.Fatalf("create answered %d", code)
		}
	}
	if !full {
		t.Fatal("disk never filled")
	}
	for _, s := range acked {
		if !verifyAllowed(t, p.addr, s) {
			t.Fatal("a key acknowledged before the disk filled no longer verifies")
		}
	}
	os.Remove(filler)
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, data, err := post(p.addr, "/web/v1/workspaces/ws/api-keys", admin, `{"name":"after","scopes":["orders:read"]}`)
		if err == nil && code == 201 {
			if !verifyAllowed(t, p.addr, data["secret"].(string)) {
				t.Fatal("key created after recovery does not verify")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after space was freed: %d %v", code, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Wait()
	checkBolt(t, db)
	t.Logf("%d keys acknowledged before the disk filled; recovered after freeing space", len(acked))
}

// checkBolt runs bbolt's consistency check on a closed database file.
func checkBolt(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("open for check: %v", err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		var errs []error
		for e := range tx.Check() {
			errs = append(errs, e)
		}
		return errors.Join(errs...)
	})
	if err != nil {
		t.Fatalf("bbolt check: %v", err)
	}
}

// A corrupt or unreadable database file: a clear error naming the file,
// exit non-zero, no panic, and the file untouched.
func TestCorruptDatabaseRefusesToStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "good.db")
	p := launch(t, good, env)
	post(p.addr, "/web/v1/workspaces/ws/api-keys", admin, `{"name":"k"}`)
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Wait()
	valid, _ := os.ReadFile(good)
	flipped := append([]byte{}, valid...)
	for _, page := range []int{0, 4096} { // both meta pages: magic to checksum
		for i := page + 16; i < page+80 && i < len(flipped); i++ {
			flipped[i] ^= 0xff
		}
	}
	for _, tc := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"random bytes", []byte(strings.Repeat("not a bolt file ", 2048)), 0o600},
		{"truncated", valid[:4096+100], 0o600},
		{"meta pages corrupted", flipped, 0o600},
		{"unreadable", valid, 0o000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".db")
			if err := os.WriteFile(path, tc.data, tc.mode); err != nil {
				t.Fatal(err)
			}
			if tc.mode == 0 && os.Geteuid() == 0 {
				// root reads anything: make it a directory-shaped problem instead.
				os.Remove(path)
				os.Mkdir(path, 0o700)
			}
			before := digest(path)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "--listen", freeAddr(t), "--db", path)
			cmd.Env = append(os.Environ(), env...)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 {
				t.Fatalf("started on a bad file: %v %s", err, out)
			}
			if strings.Contains(string(out), "panic") || strings.Contains(string(out), "goroutine ") || !strings.Contains(string(out), path) {
				t.Fatalf("unclear failure: %s", out)
			}
			if digest(path) != before {
				t.Fatal("the file was changed")
			}
		})
	}
}

func digest(path string) [32]byte {
	b, err := os.ReadFile(path)
	if err != nil {
		return sha256.Sum256([]byte(err.Error()))
	}
	return sha256.Sum256(b)
}

// Twenty rounds of concurrent creates killed at a random moment: after every
// round every acknowledged key is present and verifies, and bbolt's check
// is clean.
func TestCrashLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("crash loop: not in -short")
	}
	db := filepath.Join(t.TempDir(), "keygate.db")
	acked := map[string]bool{}
	var mu sync.Mutex
	for round := range 20 {
		p := launch(t, db, env)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					code, data, err := post(p.addr, "/web/v1/workspaces/ws/api-keys", admin, fmt.Sprintf(`{"name":"r%d-w%d-%d","scopes":["orders:read"]}`, round, w, i))
					if err != nil {
						return
					}
					if code == 201 {
						mu.Lock()
						acked[data["secret"].(string)] = true
						mu.Unlock()
					}
				}
			}()
		}
		time.Sleep(time.Duration(50+rand.IntN(400)) * time.Millisecond)
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Wait()
		close(stop)
		wg.Wait()
		checkBolt(t, db)
		p2 := launch(t, db, env)
		for s := range acked {
			if !verifyAllowed(t, p2.addr, s) {
				t.Fatalf("round %d: an acknowledged key was lost", round)
			}
		}
		p2.cmd.Process.Signal(syscall.SIGKILL)
		p2.cmd.Wait()
	}
	t.Logf("20 kill -9 rounds, %d acknowledged keys, none lost, bbolt check clean", len(acked))
}

// After kill -9 no key is lost and lastUsedAt is at most one flush interval
// stale (the flag bounds it to a minute).
func TestLastUsedAtSurvivesKill9(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "keygate.db")
	p := launch(t, db, env, "--usage-flush", "200ms")
	code, data, err := post(p.addr, "/web/v1/workspaces/ws/api-keys", admin, `{"name":"k","scopes":["orders:read"]}`)
	if err != nil || code != 201 {
		t.Fatalf("create %d %v", code, err)
	}
	id := data["apiKeyId"].(string)
	used := time.Now().Truncate(time.Second)
	if !verifyAllowed(t, p.addr, data["secret"].(string)) {
		t.Fatal("denied")
	}
	time.Sleep(600 * time.Millisecond) // past one flush
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
	p2 := launch(t, db, env)
	req, _ := http.NewRequest("GET", "http://"+p2.addr+"/web/v1/workspaces/ws/api-keys/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var env struct {
		Data struct {
			LastUsedAt *string `json:"lastUsedAt"`
		} `json:"data"`
	}
	json.NewDecoder(res.Body).Decode(&env)
	if env.Data.LastUsedAt == nil {
		t.Fatal("key kept but lastUsedAt lost after kill -9")
	}
	at, err := time.Parse(time.RFC3339, *env.Data.LastUsedAt)
	if err != nil || at.Before(used) || at.Sub(used) > time.Minute {
		t.Fatalf("lastUsedAt %v (used at %v): %v", at, used, err)
	}
}
