package sidecar_test

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/envelope"
	"github.com/keygate/keygate/sidecar"
)

type line struct {
	text string
	at   time.Time
}

// subscribe opens the invalidation stream and returns its lines as they
// arrive; the channel closes when the stream ends.
func (h *harness) subscribe() (<-chan line, func()) {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", h.base+sidecar.InvalidationsPath, nil)
	req.Header.Set("Authorization", "Bearer "+string(gwSecret))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		h.t.Fatal(err)
	}
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain") || res.Header.Get("X-Request-Id") == "" {
		cancel()
		h.t.Fatalf("stream answered %d %v", res.StatusCode, res.Header)
	}
	out := make(chan line, 4096)
	go func() {
		defer close(out)
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			out <- line{sc.Text(), time.Now()}
		}
	}()
	return out, cancel
}

// next returns the next line that is not a ping, failing after d.
func next(t *testing.T, lines <-chan line, d time.Duration) line {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("stream ended")
			}
			if l.text != "ping" {
				return l
			}
		case <-deadline:
			t.Fatalf("no invalidation within %s", d)
		}
	}
}

func TestInvalidationStreamNeedsTheGatewaySecret(t *testing.T) {
	t.Parallel()
	h := start(t)
	h.expect(h.do("GET", sidecar.InvalidationsPath, "", ""), envelope.Unauthorized)
	h.expect(h.do("GET", sidecar.InvalidationsPath, "admin", ""), envelope.Unauthorized)
	r := h.do("POST", sidecar.InvalidationsPath, "Bearer "+string(gwSecret), "")
	h.expect(r, envelope.MethodNotAllowed)
	if r.header.Get("Allow") != "GET" {
		t.Errorf("Allow = %q", r.header.Get("Allow"))
	}
}

// The stream opens with a ping, pings at least every 250 ms, pushes a
// revoked key's id before the revoke is answered, and a roll's key id at
// once and again when the old secret's window ends.
func TestInvalidationStreamPushesRevokeAndRoll(t *testing.T) {
	t.Parallel()
	h := start(t)
	lines, stop := h.subscribe()
	defer stop()
	first := <-lines
	if first.text != "ping" {
		t.Fatalf("first line %q", first.text)
	}
	// Heartbeats: ten of them within 2.5 s (one per 250 ms on average; the
	// sidecar sends one per 100 ms), and no gap as the reader sees it over
	// 1 s, the plugin's fallback bound (a loaded machine delays the reader,
	// not the sidecar's promise).
	prev := first.at
	for range 10 {
		l := <-lines
		if l.text != "ping" {
			t.Fatalf("unexpected line %q", l.text)
		}
		if gap := l.at.Sub(prev); gap > time.Second {
			t.Errorf("heartbeat gap %s", gap)
		}
		prev = l.at
	}
	if d := prev.Sub(first.at); d > 2500*time.Millisecond {
		t.Errorf("ten heartbeats took %s", d)
	}
	m := h.do("GET", "/metrics", "", "")
	if !strings.Contains(string(m.raw), "keygate_push_subscribers 1\n") {
		t.Errorf("metrics do not count the subscriber:\n%s", m.raw)
	}

	k := h.create("ws_p", `{"name":"a","scopes":["payment:read"]}`)
	h.expect(h.do("DELETE", "/web/v1/workspaces/ws_p/api-keys/"+k.APIKeyID, "admin", ""), envelope.OK)
	answered := time.Now()
	l := next(t, lines, time.Second)
	if l.text != "key "+k.APIKeyID {
		t.Fatalf("pushed %q, want the revoked key's id", l.text)
	}
	// Written before the answer; read here up to a scheduling delay later.
	if l.at.After(answered.Add(500 * time.Millisecond)) {
		t.Errorf("pushed %s after the revoke was answered", l.at.Sub(answered))
	}

	k2 := h.create("ws_p", `{"name":"b","scopes":["payment:read"]}`)
	rolling := time.Now()
	h.expect(h.do("POST", "/web/v1/workspaces/ws_p/api-keys/"+k2.APIKeyID+"/roll", "admin", `{"expireOldInSeconds":1}`), envelope.OK)
	rolled := time.Now()
	if l := next(t, lines, time.Second); l.text != "key "+k2.APIKeyID {
		t.Fatalf("pushed %q after the roll", l.text)
	}
	// The old secret's window ends at the whole second after the sidecar's
	// clock read at the roll (+1 s): between rolling and rolled, so the end
	// is one of two seconds. It is pushed at the end, not before, and well
	// within the 1 s revocation bound after it.
	l = next(t, lines, 4*time.Second)
	if l.text != "key "+k2.APIKeyID {
		t.Fatalf("pushed %q at the window's end", l.text)
	}
	earliest, latest := time.Unix(rolling.Unix()+1, 0), time.Unix(rolled.Unix()+1, 0)
	if l.at.Before(earliest) || l.at.After(latest.Add(time.Second)) {
		t.Errorf("window end pushed at %s, window ended between %s and %s", l.at.Format(time.StampMilli), earliest.Format(time.StampMilli), latest.Format(time.StampMilli))
	}
	m = h.do("GET", "/metrics", "", "")
	if !strings.Contains(string(m.raw), "keygate_push_invalidations_total 3\n") {
		t.Errorf("metrics do not count three invalidations:\n%s", m.raw)
	}
}

// A key's expiry, learned when verify read it, is pushed when it passes.
func TestInvalidationStreamPushesExpiry(t *testing.T) {
	t.Parallel()
	h := start(t)
	// Subscribed first: on a loaded machine the expiry could otherwise
	// pass, and be pushed to nobody, before the stream is open.
	lines, stop := h.subscribe()
	defer stop()
	exp := time.Now().Add(3 * time.Second).Truncate(time.Second)
	k := h.create("ws_e", `{"name":"a","scopes":["payment:read"],"expiresAt":"`+exp.UTC().Format(time.RFC3339)+`"}`)
	if v := h.verify(k.Secret, "", []string{"payment:read"}); !v.Allow {
		t.Fatalf("verify: %+v", v)
	}
	l := next(t, lines, 5*time.Second)
	if l.text != "key "+k.APIKeyID {
		t.Fatalf("pushed %q", l.text)
	}
	if l.at.Before(exp) || l.at.After(exp.Add(time.Second)) {
		t.Errorf("expiry pushed at %s, key expired at %s", l.at.Format(time.StampMilli), exp.Format(time.StampMilli))
	}
}

// Shutting the sidecar down ends open streams rather than waiting on them.
func TestInvalidationStreamEndsOnShutdown(t *testing.T) {
	t.Parallel()
	h := start(t)
	lines, stop := h.subscribe()
	defer stop()
	<-lines
	// A shutdown that waited on the stream would run into this deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	begin := time.Now()
	if err := h.srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("shutdown took %s with a stream open", d)
	}
	for range lines { // drains, then closes
	}
}

// A client that goes away is unsubscribed.
func TestInvalidationStreamClientLeaves(t *testing.T) {
	t.Parallel()
	h := start(t)
	lines, stop := h.subscribe()
	<-lines
	stop()
	for range lines {
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := h.do("GET", "/metrics", "", "")
		if strings.Contains(string(m.raw), "keygate_push_subscribers 0\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscriber still counted after it left:\n%s", m.raw)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
