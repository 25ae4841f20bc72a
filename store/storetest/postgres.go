package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresURL is the value of the environment variable env: the URL of a
// PostgreSQL role with CREATEDB that tests make their own databases with
// (.ci/run sets KEYGATE_TEST_POSTGRES and the others). Unset, the test
// skips, except under CI, where it fails.
func PostgresURL(t testing.TB, env string) string {
	t.Helper()
	v := os.Getenv(env)
	if v == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not set under CI: .ci/run must start PostgreSQL", env)
		}
		t.Skipf("%s not set", env)
	}
	return v
}

// FreshDatabase creates an empty database on the server of admin (a URL
// from PostgresURL), dropped when the test ends, and returns its URL.
func FreshDatabase(t testing.TB, admin string) string {
	t.Helper()
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	var b [6]byte
	rand.Read(b[:])
	name := "keygate_test_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("connect to the test PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, admin); err == nil {
			conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			conn.Close(ctx)
		}
	})
	u.Path = "/" + name
	return u.String()
}

// PGProxy is a TCP proxy in front of PostgreSQL that a test can take down
// (close every connection, refuse new ones), close to new connections
// only, or freeze (hold every byte in both directions: a silent partition).
type PGProxy struct {
	ln     net.Listener
	target string

	mu        sync.Mutex
	down      bool
	refuseNew bool
	frozen    bool
	conns     map[net.Conn]bool
}

// NewPGProxy starts a proxy to the server of dsn and returns it and the
// URL of the same database through it; it is taken down when the test ends.
func NewPGProxy(t testing.TB, dsn string) (*PGProxy, string) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &PGProxy{ln: ln, target: u.Host, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); p.SetDown(true) })
	go p.serve()
	u.Host = ln.Addr().String()
	return p, u.String()
}

func (p *PGProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down || p.refuseNew {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c] = true
		p.mu.Unlock()
		go func() {
			s, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				return
			}
			p.mu.Lock()
			p.conns[s] = true
			p.mu.Unlock()
			go p.pipe(s, c)
			p.pipe(c, s)
		}()
	}
}

func (p *PGProxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		for {
			p.mu.Lock()
			frozen, down := p.frozen, p.down
			p.mu.Unlock()
			if down {
				return
			}
			if !frozen {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// SetDown closes every connection and refuses new ones (true), or lets
// new ones through again (false).
func (p *PGProxy) SetDown(v bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = v
	if v {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

// SetRefuseNew refuses new connections while open ones go on (true).
func (p *PGProxy) SetRefuseNew(v bool) {
	p.mu.Lock()
	p.refuseNew = v
	p.mu.Unlock()
}

// SetFrozen holds every byte in both directions (true) without closing
// anything, until it is set false.
func (p *PGProxy) SetFrozen(v bool) {
	p.mu.Lock()
	p.frozen = v
	p.mu.Unlock()
}
