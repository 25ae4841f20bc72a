package sidecar_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/sidecar"
	"github.com/keygate/keygate/store"
)

// Revoke racing verify: many goroutines verify in a loop while the key is
// revoked. No verification that started after the revoke returned may be
// allowed — the sidecar's cache is invalidated before the revoke answers,
// so its bound is zero (the plugin's cache adds at most cache_ttl_ms).
func TestRevokeRacingVerify(t *testing.T) {
	t.Parallel()
	h := start(t)
	for round := range 5 {
		k := h.create("ws_race", `{"name":"raced","scopes":["a:b"]}`)
		body := fmt.Sprintf(`{"key":%q,"requiredScopes":["a:b"]}`, k.Secret)
		var revokedAt atomic.Int64 // UnixNano when the revoke returned; 0 before
		var lateAllows, allows atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client := &http.Client{Timeout: 5 * time.Second}
				for {
					select {
					case <-stop:
						return
					default:
					}
					startedAfter := revokedAt.Load() != 0
					req, _ := http.NewRequest("POST", h.base+"/internal/v1/verify", strings.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+string(gwSecret))
					res, err := client.Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					raw, _ := io.ReadAll(res.Body)
					res.Body.Close()
					var env struct {
						Data struct {
							Allow bool `json:"allow"`
						} `json:"data"`
					}
					json.Unmarshal(raw, &env)
					if env.Data.Allow {
						allows.Add(1)
						if startedAfter {
							lateAllows.Add(1)
						}
					}
				}
			}()
		}
		time.Sleep(100 * time.Millisecond)
		r := h.do("DELETE", "/web/v1/workspaces/ws_race/api-keys/"+k.APIKeyID, "admin", "")
		revokedAt.Store(time.Now().UnixNano())
		if r.status != 200 {
			t.Fatalf("revoke: %s", r.raw)
		}
		time.Sleep(200 * time.Millisecond)
		close(stop)
		wg.Wait()
		if allows.Load() == 0 {
			t.Fatalf("round %d: no verification was allowed before the revoke: the race was not exercised", round)
		}
		if n := lateAllows.Load(); n != 0 {
			t.Fatalf("round %d: %d verifications started after the revoke returned were allowed", round, n)
		}
	}
}

// laggingStore is the real bbolt store declaring that its view may lag
// changes made elsewhere by 700 ms, as the PostgreSQL store does.
type laggingStore struct{ *store.Bolt }

func (laggingStore) MaxStaleness() time.Duration { return 700 * time.Millisecond }

// The verify answer tells the plugin how long it may cache: the 1 s bound
// minus the store's own staleness.
func TestVerifyCacheHint(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		lag  bool
		want string
	}{{"bbolt", false, `"cacheMs":1000`}, {"store that may lag 700 ms", true, `"cacheMs":300`}} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := store.OpenBolt(t.TempDir()+"/k.db", store.BoltOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var st store.Store = b
			if tc.lag {
				st = laggingStore{b}
			}
			h := start(t, func(c *sidecar.Config) { c.Store = st }).with(t)
			k := h.create("ws", `{"name":"k","scopes":["a:b"]}`)
			for _, key := range []string{k.Secret, apikey.NewSecret(apikey.Live).Reveal()} {
				r := h.do("POST", "/internal/v1/verify", "Bearer "+string(gwSecret), fmt.Sprintf(`{"key":%q,"requiredScopes":["a:b"]}`, key))
				if !strings.Contains(string(r.env.Data), tc.want) {
					t.Fatalf("data %s lacks %s", r.env.Data, tc.want)
				}
			}
		})
	}
}

// Bodies shaped like the plugin's are decided the same on the fast path
// (the parameters after the key remembered from an earlier request) as on
// the first, fully decoded one; a different tail is parsed anew.
func TestVerifyPluginShapedBodies(t *testing.T) {
	t.Parallel()
	h := start(t)
	good := h.create("ws", `{"name":"k","scopes":["a:b"]}`)
	test := h.create("ws", `{"name":"t","scopes":["a:b"],"mode":2}`)
	send := func(key, tail string) verifyData {
		r := h.do("POST", "/internal/v1/verify", "Bearer "+string(gwSecret), `{"key":"`+key+`"`+tail)
		var v verifyData
		r.data(t, &v)
		return v
	}
	live := `,"requiredScopes":["a:b"],"allowedModes":["LIVE"]}`
	other := `,"requiredScopes":["c:d"],"allowedModes":["LIVE"]}`
	both := `,"requiredScopes":["a:b"],"allowedModes":["LIVE","TEST"]}`
	ipk := h.create("ws", `{"name":"ip","scopes":["a:b"],"ipWhitelist":["10.0.0.0/8","2001:db8::/32"]}`)
	in, out, in6 := `,"clientIp":"10.1.2.3"`+live, `,"clientIp":"192.0.2.1"`+live, `,"clientIp":"2001:db8::7"`+live
	for round := range 3 { // round 0 decodes in full, later rounds take the fast path
		for _, tc := range []struct {
			key, tail string
			allow     bool
			deny      string
		}{
			{good.Secret, live, true, ""},
			{good.Secret, other, false, "4033"},
			{test.Secret, live, false, "4035"},
			{test.Secret, both, true, ""},
			{apikey.NewSecret(apikey.Live).Reveal(), live, false, "4012"},
			{strings.Repeat("x", apikey.SecretLen), live, false, "4012"},
			// the client address is read per request, the tail after it remembered
			{ipk.Secret, in, true, ""},
			{ipk.Secret, out, false, "4034"},
			{ipk.Secret, in6, true, ""},
			{ipk.Secret, live, true, ""}, // no address: no IP check
			{good.Secret, out, true, ""}, // no whitelist
		} {
			if v := send(tc.key, tc.tail); v.Allow != tc.allow || v.DenyCode != tc.deny {
				t.Fatalf("round %d, tail %s: %+v", round, tc.tail, v)
			}
		}
		r := h.do("POST", "/internal/v1/verify", "Bearer "+string(gwSecret), `{"key":"`+ipk.Secret+`","clientIp":"10.1.2"`+live)
		if r.status != 400 || r.env.Code != "4000" || !strings.Contains(r.env.Message, "clientIp") {
			t.Fatalf("round %d, bad clientIp: %d %+v", round, r.status, r.env)
		}
	}
}

// A body with a second "key" field is decided on the key a full decode
// reads (the last), also after a plugin-shaped body was seen.
func TestVerifyDuplicateKeyField(t *testing.T) {
	t.Parallel()
	h := start(t)
	good := h.create("ws", `{"name":"k","scopes":["a:b"]}`)
	unknown := apikey.NewSecret(apikey.Live).Reveal()
	tail := `,"KEY":"` + good.Secret + `","requiredScopes":["a:b"],"allowedModes":["LIVE"]}`
	for range 3 {
		for _, first := range []string{good.Secret, unknown} {
			r := h.do("POST", "/internal/v1/verify", "Bearer "+string(gwSecret), `{"key":"`+first+`"`+tail)
			var v verifyData
			r.data(t, &v)
			if !v.Allow { // encoding/json takes the last, case-insensitive match: the good key
				t.Fatalf("first key %s…: %+v", first[:12], v)
			}
		}
	}
}
