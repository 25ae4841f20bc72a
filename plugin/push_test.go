package plugin

import (
	"testing"
	"time"

	"github.com/keygate/keygate/internal/apikey"
)

// The freshness rule of a cached entry under the stream: past cache_ttl_ms
// it lives only while the subscription it was fetched under keeps
// confirming it (a line read within cache_ttl_ms), and never past
// cache_ttl_pushed_ms; an invalidation read while it was being fetched, or
// a new subscription, leaves it under cache_ttl_ms alone.
func TestCacheFreshUnderStream(t *testing.T) {
	t.Parallel()
	c := &factsCache{}
	st := &pushStream{ns: "s"}
	st.epoch.Store(1)
	st.up.Store(true)
	t0 := time.Now()
	st.beat.Store(monoNs(t0))
	f := &apikey.Facts{APIKeyID: apikey.NewID(apikey.Live)}
	k := cacheKey{ns: "s", hash: [32]byte{1}}
	epoch, seq := st.covered()
	c.put(k, f, t0, time.Second, time.Minute, st, epoch, seq, t0)

	at := func(d time.Duration) bool { _, ok, _ := c.get(k, t0.Add(d), st); return ok }
	if !at(999 * time.Millisecond) {
		t.Fatal("not fresh within cache_ttl_ms")
	}
	if at(1500 * time.Millisecond) {
		t.Fatal("fresh past cache_ttl_ms with no line read since the fetch")
	}
	st.beat.Store(monoNs(t0.Add(10 * time.Second))) // the stream confirms it
	if !at(10*time.Second + 999*time.Millisecond) {
		t.Fatal("not fresh within cache_ttl_ms of the last line")
	}
	if at(11 * time.Second) {
		t.Fatal("fresh more than cache_ttl_ms after the last line")
	}
	st.beat.Store(monoNs(t0.Add(2 * time.Minute)))
	if at(time.Minute) {
		t.Fatal("fresh past cache_ttl_pushed_ms")
	}

	// An invalidation read during the fetch: cache_ttl_ms only.
	st.beat.Store(monoNs(t0))
	epoch, seq = st.covered()
	st.seq.Add(1)
	c.put(k, f, t0, time.Second, time.Minute, st, epoch, seq, t0)
	st.beat.Store(monoNs(t0.Add(5 * time.Second)))
	if at(5 * time.Second) {
		t.Fatal("an answer that raced an invalidation outlived cache_ttl_ms")
	}

	// A new subscription: the entry is not covered by it.
	epoch, seq = st.covered()
	c.put(k, f, t0, time.Second, time.Minute, st, epoch, seq, t0)
	if !at(5 * time.Second) {
		t.Fatal("covered entry not fresh")
	}
	st.epoch.Add(1)
	if at(5 * time.Second) {
		t.Fatal("an entry of an earlier subscription is fresh under a new one")
	}

	// No live stream at fetch time, or no facts: cache_ttl_ms only.
	st.up.Store(false)
	epoch, seq = st.covered()
	st.up.Store(true)
	c.put(k, f, t0, time.Second, time.Minute, st, epoch, seq, t0)
	if at(5 * time.Second) {
		t.Fatal("an answer fetched with no live stream outlived cache_ttl_ms")
	}
	epoch, seq = st.covered()
	c.put(k, nil, t0, time.Second, time.Minute, st, epoch, seq, t0)
	if at(5 * time.Second) {
		t.Fatal("a negative answer outlived cache_ttl_ms")
	}
}

// The stream's drops remove the named key's entries of that sidecar only.
func TestCacheDrops(t *testing.T) {
	t.Parallel()
	c := &factsCache{}
	now := time.Now()
	a, b := &apikey.Facts{APIKeyID: apikey.NewID(apikey.Live)}, &apikey.Facts{APIKeyID: apikey.NewID(apikey.Live)}
	put := func(ns string, h byte, f *apikey.Facts) cacheKey {
		k := cacheKey{ns: ns, hash: [32]byte{h}}
		c.put(k, f, now, time.Second, 0, nil, 0, 0, now)
		return k
	}
	a1, a2, b1, other := put("s", 1, a), put("s", 2, a), put("s", 3, b), put("t", 4, a)
	has := func(k cacheKey) bool { _, ok, _ := c.get(k, now, nil); return ok }
	c.dropKey("s", a.APIKeyID)
	if has(a1) || has(a2) || !has(b1) || !has(other) {
		t.Fatal("dropKey removed the wrong entries")
	}
	c.dropNS("s")
	if has(b1) || !has(other) {
		t.Fatal("dropNS removed the wrong entries")
	}
}

func TestParseStreamLine(t *testing.T) {
	t.Parallel()
	id := apikey.NewID(apikey.Live)
	for _, tc := range []struct {
		line string
		kind int
		id   string
	}{
		{"ping\n", linePing, ""},
		{"all\n", lineAll, ""},
		{"key " + id + "\n", lineKey, id},
		{"key " + id, lineBad, ""},
		{"key sk_live_short\n", lineBad, ""},
		{"key  " + id + "\n", lineBad, ""},
		{"PING\n", lineBad, ""},
		{"\n", lineBad, ""},
	} {
		if kind, got := parseStreamLine([]byte(tc.line)); kind != tc.kind || got != tc.id {
			t.Errorf("%q: %d %q, want %d %q", tc.line, kind, got, tc.kind, tc.id)
		}
	}
}

// FuzzParseStreamLine: any line the sidecar (or anything in its place)
// writes is understood as what it says or as "drop everything".
func FuzzParseStreamLine(f *testing.F) {
	f.Add([]byte("ping\n"))
	f.Add([]byte("all\n"))
	f.Add([]byte("key sk_live_abcdefghijklmn\n"))
	f.Add([]byte("key \n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		kind, id := parseStreamLine(b)
		switch kind {
		case linePing:
			if string(b) != "ping\n" {
				t.Fatalf("%q read as ping", b)
			}
		case lineAll:
			if string(b) != "all\n" {
				t.Fatalf("%q read as all", b)
			}
		case lineKey:
			if !apikey.ValidID(id) || string(b) != "key "+id+"\n" {
				t.Fatalf("%q read as key %q", b, id)
			}
		case lineBad:
			if id != "" {
				t.Fatalf("bad line with an id")
			}
		default:
			t.Fatalf("kind %d", kind)
		}
	})
}
