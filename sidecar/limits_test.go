package sidecar_test

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/sidecar"
)

// A client that sends its request too slowly is cut off after ReadTimeout.
func TestSlowLorisCutOff(t *testing.T) {
	t.Parallel()
	h := start(t, func(c *sidecar.Config) { c.ReadTimeout = 300 * time.Millisecond })
	conn, err := net.Dial("tcp", h.srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	begin := time.Now()
	conn.Write([]byte("POST /internal/v1/verify HTTP/1.1\r\nHost: sidecar\r\n"))
	// Trickle one header byte every 100 ms: never finishing the request.
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(conn)
		done <- err
	}()
	for i := 0; i < 50; i++ {
		select {
		case <-done:
			if time.Since(begin) > 2*time.Second {
				t.Fatalf("closed only after %s", time.Since(begin))
			}
			return
		case <-time.After(100 * time.Millisecond):
			conn.Write([]byte("X"))
		}
	}
	t.Fatal("slow client never cut off")
}

// Oversized or too many headers are refused with an envelope, not served.
func TestHeaderLimits(t *testing.T) {
	t.Parallel()
	h := start(t)
	for _, tc := range []struct {
		name    string
		headers string
	}{
		{"one 20 KiB header", "X-Big: " + strings.Repeat("a", 20<<10) + "\r\n"},
		{"1 MiB Authorization", "Authorization: Bearer " + strings.Repeat("a", 1<<20) + "\r\n"},
		{"3000 headers (count is bounded by MaxHeaderBytes)", strings.Repeat("X-H: v\r\n", 3000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", h.srv.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			go conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: s\r\n" + tc.headers + "\r\n"))
			line, err := bufio.NewReader(conn).ReadString('\n')
			if err != nil && err != io.EOF {
				// A reset before any answer is acceptable only if nothing was served.
				return
			}
			if strings.Contains(line, " 200 ") {
				t.Fatalf("served: %q", line)
			}
			if line != "" && !strings.Contains(line, " 431 ") && !strings.Contains(line, " 400 ") {
				t.Fatalf("status line %q", line)
			}
		})
	}
	// The server still serves normal requests afterwards.
	if r := h.do("GET", "/healthz", "", ""); r.status != 200 {
		t.Fatalf("healthz after abuse: %d", r.status)
	}
}

// A path that normalization would turn into another route is not served:
// the gateway matches routes on the raw path, so /console%2F..%2Fmetrics
// must not become /metrics here.
func TestNonCanonicalPathsNotServed(t *testing.T) {
	t.Parallel()
	h := start(t)
	for _, p := range []string{
		"/console%2F..%2Fmetrics", "/console/../metrics", "/console/%2e%2e/readyz", "//metrics",
		"/console%2F..%2Fweb/v1/workspaces/ws/api-keys", "/web/v1/workspaces/ws/./api-keys", "/metrics%00",
		"/console\\..\\metrics",
	} {
		conn, err := net.Dial("tcp", h.srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		conn.Write([]byte("GET " + p + " HTTP/1.1\r\nHost: s\r\nAuthorization: Bearer " + string(adminToken) + "\r\nConnection: close\r\n\r\n"))
		raw, _ := io.ReadAll(conn)
		conn.Close()
		if !strings.HasPrefix(string(raw), "HTTP/1.1 404") && !strings.HasPrefix(string(raw), "HTTP/1.1 400") {
			t.Fatalf("%s served: %.80q", p, raw)
		}
		if strings.Contains(string(raw), "keygate_verify_total") || strings.Contains(string(raw), "ready") {
			t.Fatalf("%s reached an internal endpoint", p)
		}
	}
	if r := h.do("GET", "/metrics", "", ""); r.status != 200 {
		t.Fatalf("canonical path refused: %d", r.status)
	}
}
