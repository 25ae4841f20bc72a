package sidecar

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/internal/envelope"
)

// Property: decodeCreate never panics; it either rejects with 400/4000 and a
// message, or returns a request whose every field satisfies the rules of
// docs/CONTRACT.md §5 (so nothing invalid can reach the store).
func FuzzDecodeCreate(f *testing.F) {
	for _, s := range []string{
		`{"name":"Production Key","scopes":["payment:read","payment:write"],"mode":1,"ipWhitelist":["192.168.1.0/24"]}`,
		`{"name":"k","mode":2,"expiresAt":"2099-01-01T00:00:00Z"}`,
		`{"name":"k","name":"j"}`, `{"name":"k"} x`, `[]`, `{"name":"\ud800"}`, `{"name":"a","mode":1.0}`,
		`{"name":" ","scopes":null,"ipWhitelist":null}`, `{"name":"k","ipWhitelist":["::ffff:1.2.3.4/128"]}`,
	} {
		f.Add([]byte(s))
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeCreate(body, nil, now)
		if err != nil {
			var ee *envelope.Error
			if !errors.As(err, &ee) || ee.Code != envelope.BadRequest || ee.Msg == "" {
				t.Fatalf("error %v is not a 4000 with a message", err)
			}
			return
		}
		if n := utf8.RuneCountInString(req.Name); !utf8.ValidString(req.Name) || n < 1 || n > 128 {
			t.Fatalf("bad name %q", req.Name)
		}
		if req.Mode != apikey.Live && req.Mode != apikey.Test {
			t.Fatalf("mode %d", req.Mode)
		}
		if req.Scopes == nil || len(req.Scopes) > 64 || req.IPWhitelist == nil || len(req.IPWhitelist) > 100 {
			t.Fatalf("lists %v %v", req.Scopes, req.IPWhitelist)
		}
		for _, s := range req.Scopes {
			if !apikey.ValidScope(s) {
				t.Fatalf("scope %q", s)
			}
		}
		if _, err := apikey.ParseCanonical(req.IPWhitelist); err != nil {
			t.Fatalf("stored whitelist does not parse: %v", err)
		}
		if req.ExpiresAt != 0 && req.ExpiresAt <= now.Unix()-1 {
			t.Fatalf("expiresAt in the past")
		}
	})
}

// Property: the verify fast path reads every body as a full decode does.
// A server that has seen learn (and so may remember its tail) parses probe
// to the same key, parameters and outcome as a server that has seen
// nothing.
func FuzzParseVerify(f *testing.F) {
	key := apikey.NewSecret(apikey.Live).Reveal()
	other := apikey.NewSecret(apikey.Test).Reveal()
	plugin := `,"requiredScopes":["a:b"],"allowedModes":["LIVE"]}`
	for _, tc := range [][2]string{
		{`{"key":"` + key + `"` + plugin, `{"key":"` + other + `"` + plugin},
		{`{"key":"` + key + `","clientIp":"10.0.0.1"` + plugin, `{"key":"` + other + `","clientIp":"::1"` + plugin},
		{`{"key":"` + key + `"` + plugin, `{"key":"` + other + `","clientIp":"300.1.1.1"` + plugin},
		{`{"key":"` + key + `"` + plugin, `{"key":"` + other + `","clientIp":"fe80::1%eth0"` + plugin},
		{`{"key":"` + key + `","KEY":"` + other + `"` + plugin, `{"key":"` + other + `","KEY":"` + key + `"` + plugin},
		{`{"key":"` + key + `","requiredScopes":["a:b"],"CLIENTIP":"1.2.3.4"}`, `{"key":"` + other + `","requiredScopes":["a:b"],"CLIENTIP":"1.2.3.4"}`},
		{`{"key":"` + key + `","\u006bey":"` + other + `"}`, `{"key":"` + other + `","\u006bey":"` + key + `"}`},
		{`{"key":"` + key + `","allowedModes":["TEST","LIVE"]}`, `{"key":"` + other + `","allowedModes":["TEST","LIVE"]} x`},
		{`{"key":"` + key + `","allowedModes":["BOTH"]}`, `{"key":"` + other + `","allowedModes":["BOTH"]}`},
	} {
		f.Add([]byte(tc[0]), []byte(tc[1]))
	}
	fresh := func() *Server { return &Server{} }
	f.Fuzz(func(t *testing.T, learn, probe []byte) {
		warm := fresh()
		warm.parseVerify(learn)
		warm.parseVerify(learn)
		k1, p1, err1 := warm.parseVerify(probe)
		k2, p2, err2 := fresh().parseVerify(probe)
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("fast path error %v, full decode error %v", err1, err2)
		}
		if err1 != nil {
			return
		}
		if !bytes.Equal(k1, k2) || p1.modes != p2.modes || p1.clientIP != p2.clientIP || !slices.Equal(p1.scopes, p2.scopes) {
			t.Fatalf("fast path %q %+v, full decode %q %+v", k1, p1, k2, p2)
		}
	})
}

// Property: parseAddr reads an address exactly as netip.ParseAddr does.
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"10.9.200.1", "0.0.0.0", "255.255.255.255", "256.1.1.1", "01.2.3.4", "1.2.3", "1.2.3.4.", ".1.2.3",
		"1..2.3", "1.2.3.4.5", "::1", "fe80::1%eth0", "::ffff:1.2.3.4", "", "1.2.3.04", "1.2.3.400", "0.0.0.00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, gotErr := parseAddr(b)
		want, wantErr := netip.ParseAddr(string(b))
		if got != want || (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("parseAddr(%q) = %v, %v; netip: %v, %v", b, got, gotErr, want, wantErr)
		}
	})
}
