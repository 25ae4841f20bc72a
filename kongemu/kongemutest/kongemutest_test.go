package kongemutest

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
)

func TestLogBufferConcurrent(t *testing.T) {
	var lb LogBuffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { fmt.Fprintf(&lb, "line %d\n", i) })
	}
	wg.Wait()
	if n := strings.Count(lb.String(), "\n"); n != 8 {
		t.Fatalf("%d lines, want 8: %q", n, lb.String())
	}
}

func TestClosedAddrRefuses(t *testing.T) {
	addr := ClosedAddr(t)
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("addr %q", addr)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatalf("something listens on %s", addr)
	}
}
