package envelope

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/keygate/keygate/internal/apikey"
)

func TestAppend(t *testing.T) {
	t.Parallel()
	now := time.UnixMilli(1709337600000)
	got := string(Append(nil, now, OK, "", "rid-1", []byte(`{"a":1}`)))
	want := `{"version":"1.3.0","timestamp":1709337600000,"success":true,"code":"2000","message":"SUCCESS","requestId":"rid-1","data":{"a":1}}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	got = string(Append(nil, now, Unauthorized, "", "r", []byte(`{"leak":1}`)))
	if got != `{"version":"1.3.0","timestamp":1709337600000,"success":false,"code":"4010","message":"Invalid or expired token","requestId":"r"}` {
		t.Fatal(got)
	}
}

func TestSeedMessages(t *testing.T) {
	t.Parallel()
	for c, m := range map[Code]string{
		Unauthorized: "Invalid or expired token", NotOwner: "Only workspace owner can manage API keys", OK: "SUCCESS",
	} {
		if c.Message() != m {
			t.Errorf("%s: %q", c, c.Message())
		}
	}
	for _, c := range Codes() {
		if len(c) != 4 || c.Status()/100 != int(c[0]-'0') || c.Message() == "" {
			t.Errorf("code %s: status %d", c, c.Status())
		}
	}
	if (&Error{Code: Internal, Msg: "db path /x leaked"}).Message() != "Internal error" {
		t.Fatal("5xx message carries details")
	}
}

// Property: AppendString always yields a JSON string that decodes to the
// input (with invalid UTF-8 replaced).
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a\"b\\c", "\x00\x1f<>&", "\u2028\u2029", "\xff\xfe", "é語"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := AppendString(nil, s)
		var back string
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("%q → %s: %v", s, out, err)
		}
		if want := strings.ToValidUTF8(s, "\uFFFD"); utf8.ValidString(s) && back != want {
			t.Fatalf("%q → %q", s, back)
		}
	})
}

func TestRequestIDs(t *testing.T) {
	t.Parallel()
	for s, ok := range map[string]bool{
		"req-1": true, "a/b:c=d": true, strings.Repeat("x", 128): true,
		"": false, strings.Repeat("x", 129): false, "a b": false, "a\"b": false, `a\b`: false, "é": false, "a\r\nb": false,
	} {
		if ValidRequestID(s) != ok {
			t.Errorf("ValidRequestID(%q) = %v", s, !ok)
		}
	}
	a, b := NewRequestID(), NewRequestID()
	if a == b || len(a) != 36 || !ValidRequestID(a) || a[14] != '4' {
		t.Fatalf("NewRequestID: %q %q", a, b)
	}
}

// Every decision Decide can return has a code of the table (a denial) or
// none (Allow), no two share one, and DecisionOf reads each back.
func TestDenyCode(t *testing.T) {
	t.Parallel()
	want := map[apikey.Decision]Code{
		apikey.Allow: "", apikey.DenyInvalid: InvalidKey, apikey.DenyMode: ModeDenied,
		apikey.DenyScope: ScopeDenied, apikey.DenyIP: IPDenied,
	}
	for d, c := range want {
		if got := DenyCode(d); got != c {
			t.Errorf("DenyCode(%d) = %q, want %q", d, got, c)
		}
		if back, ok := DecisionOf(string(c)); !ok || back != d {
			t.Errorf("DecisionOf(%q) = %d, %v, want %d", c, back, ok, d)
		}
	}
	if len(decisionOf) != len(want) {
		t.Errorf("DenyCode knows %d decisions, the test %d", len(decisionOf), len(want))
	}
	if c := DenyCode(apikey.DenyIP + 1); c != Internal {
		t.Errorf("an unknown decision is %q, want %q", c, Internal)
	}
	for _, s := range []string{"2000", "4011", "4290", "5000", " 4012", "4012 "} {
		if d, ok := DecisionOf(s); ok {
			t.Errorf("DecisionOf(%q) = %d, want none", s, d)
		}
	}
}
