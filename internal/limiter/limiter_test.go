package limiter

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 21, 12, 0, 0, 0, time.UTC)

func TestBurstThenBlocked(t *testing.T) {
	t.Parallel()
	l := New(30, 3, 100) // one token every 2 s
	for i := range 2 {
		if _, blocked := l.Fail("a", t0); blocked {
			t.Fatalf("blocked after %d failures, burst 3", i+1)
		}
		if _, blocked := l.Blocked("a", t0); blocked {
			t.Fatalf("Blocked after %d failures, burst 3", i+1)
		}
	}
	if l.AnyBlocked(t0) {
		t.Fatal("AnyBlocked before any block")
	}
	ra, blocked := l.Fail("a", t0)
	if !blocked || ra != 2*time.Second {
		t.Fatalf("third failure: %v %v, want blocked for 2s", ra, blocked)
	}
	if ra, blocked := l.Blocked("a", t0.Add(500*time.Millisecond)); !blocked || ra != 1500*time.Millisecond {
		t.Fatalf("Blocked 0.5 s later: %v %v, want 1.5 s", ra, blocked)
	}
	if !l.AnyBlocked(t0.Add(1999 * time.Millisecond)) {
		t.Error("AnyBlocked false while a is blocked")
	}
	if _, blocked := l.Blocked("b", t0); blocked {
		t.Error("another key is blocked")
	}
	// Retry-After later the key may fail once more, then it is blocked again.
	if _, blocked := l.Blocked("a", t0.Add(2*time.Second)); blocked {
		t.Error("still blocked after Retry-After")
	}
	if l.AnyBlocked(t0.Add(2 * time.Second)) {
		t.Error("AnyBlocked after every block ended")
	}
	if ra, blocked := l.Fail("a", t0.Add(2*time.Second)); !blocked || ra != 2*time.Second {
		t.Errorf("failure after recovering: %v %v, want blocked again for 2 s", ra, blocked)
	}
	// A long quiet period refills the whole burst.
	later := t0.Add(time.Hour)
	for i := range 2 {
		if _, blocked := l.Fail("a", later); blocked {
			t.Fatalf("blocked after %d failures following an hour of quiet", i+1)
		}
	}
}

func TestRetryAfterMath(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		perMinute, burst int
		want             time.Duration
	}{
		{60, 1, time.Second},
		{30, 1, 2 * time.Second},
		{1, 1, time.Minute},
		{120, 5, 500 * time.Millisecond},
		{6000, 1, 10 * time.Millisecond},
	} {
		l := New(tc.perMinute, tc.burst, 10)
		var ra time.Duration
		var blocked bool
		for range tc.burst {
			ra, blocked = l.Fail("k", t0)
		}
		if !blocked || ra != tc.want {
			t.Errorf("%d/min burst %d: retry after %v (blocked %v), want %v", tc.perMinute, tc.burst, ra, blocked, tc.want)
		}
	}
	for _, tc := range []struct {
		d    time.Duration
		want int
	}{
		{0, 1}, {time.Nanosecond, 1}, {time.Second, 1}, {time.Second + time.Nanosecond, 2},
		{1500 * time.Millisecond, 2}, {time.Minute, 60},
	} {
		if got := Seconds(tc.d); got != tc.want {
			t.Errorf("Seconds(%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
}

// TestEvictionBound: an attacker rotating keys never makes the limiter
// track more than maxKeys, and the keys it keeps are the most recent ones.
func TestEvictionBound(t *testing.T) {
	t.Parallel()
	const max = 64
	l := New(1, 2, max)
	for i := range 10 * max {
		l.Fail(fmt.Sprint("ip", i), t0)
		if n := l.Len(); n > max {
			t.Fatalf("tracking %d keys, bound %d", n, max)
		}
	}
	if n := l.Len(); n != max {
		t.Errorf("tracking %d keys, want %d", n, max)
	}
	// The newest key is kept; the oldest was evicted.
	last := fmt.Sprint("ip", 10*max-1)
	l.Fail(last, t0)
	if _, blocked := l.Blocked(last, t0); !blocked {
		t.Error("the most recent key was evicted")
	}
	if _, blocked := l.Blocked("ip0", t0); blocked {
		t.Error("the oldest key is still tracked")
	}
}

// TestBlockedKeySurvivesChurn: a key that keeps being refused stays at the
// recent end and is not evicted by a moderate churn of other keys.
func TestBlockedKeySurvivesChurn(t *testing.T) {
	t.Parallel()
	const max = 16
	l := New(1, 1, max)
	l.Fail("attacker", t0)
	for i := range 4 * max {
		if i%(max/2) == 0 {
			if _, blocked := l.Blocked("attacker", t0); !blocked {
				t.Fatalf("attacker unblocked after %d other keys", i)
			}
		}
		l.Fail(fmt.Sprint("other", i), t0)
	}
}

// TestIdleDropped: keys whose buckets refilled are forgotten as new keys
// arrive, so a quiet limiter shrinks without a background goroutine.
func TestIdleDropped(t *testing.T) {
	t.Parallel()
	l := New(60, 2, 1000)
	for i := range 100 {
		l.Fail(fmt.Sprint("old", i), t0)
	}
	later := t0.Add(time.Minute) // every old bucket is full again
	for i := range 40 {
		l.Fail(fmt.Sprint("new", i), later)
	}
	if n := l.Len(); n != 60 {
		t.Errorf("tracking %d keys; want 60 (40 new, 20 old: idle ones are dropped two per new key)", n)
	}
}

func TestConcurrent(t *testing.T) {
	t.Parallel()
	l := New(600, 10, 256)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				now := t0.Add(time.Duration(i) * time.Millisecond)
				k := fmt.Sprint(g, "/", i%300)
				l.Fail(k, now)
				l.Blocked(k, now)
				l.AnyBlocked(now)
			}
		}()
	}
	wg.Wait()
	if n := l.Len(); n > 256 {
		t.Errorf("tracking %d keys, bound 256", n)
	}
}

func TestNewPanicsOnNonsense(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Error("New(0, 1, 1) did not panic")
		}
	}()
	New(0, 1, 1)
}

func BenchmarkBlockedMiss(b *testing.B) {
	l := New(30, 20, 1<<14)
	b.ReportAllocs()
	for b.Loop() {
		l.Blocked("203.0.113.7", t0)
	}
}

func BenchmarkAnyBlocked(b *testing.B) {
	l := New(30, 20, 1<<14)
	b.ReportAllocs()
	for b.Loop() {
		l.AnyBlocked(t0)
	}
}
