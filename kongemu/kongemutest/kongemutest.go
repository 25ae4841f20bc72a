// Package kongemutest is test support shared by kongemu's tests and the
// tests of plugins (keygate's among them): what both need and used to copy.
// It imports only the standard library, so any test may use it without
// drawing kongemu or keygate into its imports.
package kongemutest

import (
	"bytes"
	"net"
	"sync"
	"testing"
)

// LogBuffer keeps what is written to it; it is safe for concurrent use,
// so it can take a logger's output while servers and plugins run.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// ClosedAddr returns a loopback address ("127.0.0.1:port") on which
// nothing listens: a port the kernel handed out and that was closed again.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
