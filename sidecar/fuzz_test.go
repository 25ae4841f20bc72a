package sidecar

import (
	"errors"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/internal/envelope"
)

// Property: decodeCreate never panics; it either rejects with 400/4000 and a
// message, or returns a request whose every field satisfies the rules of
// SPEC §2 (so nothing invalid can reach the store).
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
