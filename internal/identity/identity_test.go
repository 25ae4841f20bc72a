package identity

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var secret = []byte("identity-test-secret-0123456789")

func TestSignVerify(t *testing.T) {
	t.Parallel()
	now := time.Now()
	c := Claims{Subject: "u1", WorkspaceID: "ws", Role: RoleOwner, Portal: "PARTNER", RequestID: "r", AllowTestMode: true, Path: "/web/v1/workspaces/ws/api-keys", Method: "GET"}
	tok, err := Sign(secret, c, now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Verify(secret, tok, now)
	if err != nil || got.Subject != "u1" || got.WorkspaceID != "ws" || !got.AllowTestMode || got.ExpiresAt-got.IssuedAt != 60 {
		t.Fatalf("%+v %v", got, err)
	}
	tooLong := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"workspaceId": "ws", "role": "OWNER", "iat": now.Unix(), "exp": now.Unix() + 3600})
	long, _ := tooLong.SignedString(secret)
	noExp, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"workspaceId": "ws", "role": "OWNER", "iat": now.Unix()}).SignedString(secret)
	hs512, _ := jwt.NewWithClaims(jwt.SigningMethodHS512, jwt.MapClaims{"workspaceId": "ws", "role": "OWNER", "iat": now.Unix(), "exp": now.Unix() + 30}).SignedString(secret)
	full := func(jti any) string {
		m := jwt.MapClaims{"workspaceId": "ws", "role": "OWNER", "path": "/p", "method": "GET", "iat": now.Unix(), "exp": now.Unix() + 30}
		if jti != nil {
			m["jti"] = jti
		}
		s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, m).SignedString(secret)
		return s
	}
	if _, err := Verify(secret, full("id-1"), now); err != nil {
		t.Fatalf("a complete assertion with a jti: %v", err)
	}
	tok2, _ := Sign(secret, c, now, time.Minute)
	got2, _ := Verify(secret, tok2, now)
	if len(got.ID) < 20 || got2.ID == got.ID {
		t.Fatalf("jti %q then %q: want a fresh random id per assertion", got.ID, got2.ID)
	}
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"workspaceId": "ws", "role": "OWNER", "iat": now.Unix(), "exp": now.Unix() + 30}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	for name, tc := range map[string]struct {
		tok string
		at  time.Time
		key []byte
	}{
		"expired":         {tok, now.Add(2 * time.Minute), secret},
		"wrong secret":    {tok, now, []byte("another-secret-0123456789")},
		"lifetime > 60 s": {long, now, secret},
		"no exp":          {noExp, now, secret},
		"HS512":           {hs512, now, secret},
		"alg none":        {none, now, secret},
		"garbage":         {"a.b.c", now, secret},
		"tampered":        {tok[:len(tok)-2] + "xx", now, secret},
		"huge":            {strings.Repeat("a", 5000), now, secret},
		"empty secret":    {tok, now, nil},
		"no jti":          {full(nil), now, secret},
		"empty jti":       {full(""), now, secret},
		"jti too long":    {full(strings.Repeat("j", MaxIDLen+1)), now, secret},
	} {
		if _, err := Verify(tc.key, tc.tok, tc.at); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := Sign(nil, c, now, time.Minute); err == nil {
		t.Fatal("signed with empty secret")
	}
}

func TestBearer(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"Bearer abc": "abc", "bearer abc": "abc", "BEARER \tabc  ": "abc",
		"": "", "Bearer": "", "Bearer ": "", "Basic abc": "", "Bearerabc": "", "Bearer a b": "",
	} {
		got, ok := Bearer(in)
		if got != want || ok != (want != "") {
			t.Errorf("Bearer(%q) = %q, %v", in, got, ok)
		}
	}
}
