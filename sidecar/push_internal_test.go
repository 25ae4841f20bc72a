package sidecar

import (
	"testing"
	"time"
)

// A subscriber that does not read is cut off once its buffer is full, and
// publishing never waits for it; one that reads keeps everything.
func TestPushHubDropsASubscriberThatFallsBehind(t *testing.T) {
	h := newPushHub()
	defer h.close()
	slow := h.subscribe()
	fast := h.subscribe()
	publish := func(n int) {
		t.Helper()
		done := make(chan struct{})
		go func() {
			for range n {
				h.key("sk_live_abcdefghijklmn")
			}
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("publish blocked on a subscriber that does not read")
		}
	}
	read := func(n int) {
		t.Helper()
		for i := range n {
			select {
			case <-fast.ch:
			case <-time.After(5 * time.Second):
				t.Fatalf("the reading subscriber got %d of %d lines", i, n)
			}
		}
	}
	publish(pushBuffer) // both buffers full, nobody cut off yet
	read(pushBuffer)
	if h.overflows.Load() != 0 {
		t.Fatal("a subscriber was cut off before its buffer was full")
	}
	publish(10) // the slow one overflows on the first
	read(10)
	select {
	case <-slow.done:
	default:
		t.Fatal("the slow subscriber was not disconnected")
	}
	if h.overflows.Load() != 1 || h.nsubs.Load() != 1 {
		t.Fatalf("overflows %d, subscribers %d", h.overflows.Load(), h.nsubs.Load())
	}
	select {
	case <-fast.done:
		t.Fatal("the reading subscriber was disconnected")
	default:
	}
}

// The expiry timers keep the nearest maxExpiries, each once.
func TestPushHubExpiriesBounded(t *testing.T) {
	h := newPushHub()
	defer h.close()
	base := time.Now().Unix() + 3600
	for i := range int64(maxExpiries + 100) {
		h.watchExpiry("sk_live_abcdefghijklmn", base+i)
		h.watchExpiry("sk_live_abcdefghijklmn", base+i) // twice: kept once
	}
	h.watchExpiry("sk_live_nearestnearest", base-1)
	if len(h.exp) != maxExpiries || len(h.expSet) != maxExpiries {
		t.Fatalf("%d timers (%d in the set), want %d", len(h.exp), len(h.expSet), maxExpiries)
	}
	if h.exp[0].at != base-1 {
		t.Fatalf("nearest timer at %d, want %d", h.exp[0].at, base-1)
	}
	for _, e := range h.exp {
		if e.at >= base+maxExpiries-1 {
			t.Fatalf("kept a far timer (%d) over a nearer one", e.at)
		}
	}
}
