package apikey

import (
	"fmt"
	"hash/crc32"
	"net/netip"
	"regexp"
	"strings"
	"testing"
)

var secretRe = regexp.MustCompile(`^sk_(live|test)_[0-9A-Za-z]{38}$`)

func TestSecretFormat(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, m := range []Mode{Live, Test} {
		for range 200 {
			s := NewSecret(m).Reveal()
			if !secretRe.MatchString(s) || !strings.HasPrefix(s, m.Prefix()) || seen[s] {
				t.Fatalf("secret %q", s)
			}
			seen[s] = true
			got, ok := ParseSecret(s)
			if !ok || got != m {
				t.Fatalf("ParseSecret(%q) = %v %v", s, got, ok)
			}
			id := NewID(m)
			if !ValidID(id) || len(id) != 22 || !strings.HasPrefix(id, m.Prefix()) {
				t.Fatalf("id %q", id)
			}
		}
	}
}

// TestChecksumKnownAnswers checks the secret format against vectors
// computed once outside this code (Python's zlib.crc32 and a base62 written
// for the purpose): the checksum is the CRC-32 IEEE of everything before it,
// in base62 (0-9A-Za-z), most significant digit first, left-padded with '0'
// to 6 digits.
func TestChecksumKnownAnswers(t *testing.T) {
	t.Parallel()
	if got := crc32IEEEString("123456789"); got != 0xcbf43926 { // the CRC-32 check value
		t.Fatalf("crc32IEEEString(123456789) = %08x", got)
	}
	for _, tc := range []struct {
		body string
		crc  uint32
		sum  string
		mode Mode
	}{
		{"sk_live_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0xe263d3df, "492pXL", Live},
		{"sk_test_00000000000000000000000000000000", 0x387a42fd, "127lYz", Test},
		{"sk_live_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef", 0x2e066eeb, "0qFxc3", Live},
		{"sk_test_zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", 0x6e317967, "2176iF", Test},
		{"sk_live_00000000000000000000000000000003", 0x112907c2, "0JU0Mk", Live}, // padded
	} {
		t.Run(tc.body, func(t *testing.T) {
			if got := crc32IEEEString(tc.body); got != tc.crc {
				t.Fatalf("CRC %08x, want %08x", got, tc.crc)
			}
			sum := make([]byte, 6)
			if putChecksum(sum, tc.crc); string(sum) != tc.sum {
				t.Fatalf("putChecksum = %s, want %s", sum, tc.sum)
			}
			if m, ok := ParseSecret(tc.body + tc.sum); !ok || m != tc.mode {
				t.Fatalf("ParseSecret = %v, %v; want %v", m, ok, tc.mode)
			}
			for i := range len(tc.sum) {
				b := []byte(tc.body + tc.sum)
				b[len(tc.body)+i] = base62[(strings.IndexByte(base62, tc.sum[i])+1)%62]
				if _, ok := ParseSecret(string(b)); ok {
					t.Fatalf("checksum digit %d changed, still accepted: %s", i, b)
				}
			}
		})
	}
}

func TestParseSecretRejects(t *testing.T) {
	t.Parallel()
	good := NewSecret(Live).Reveal()
	flip := func(i int) string {
		b := []byte(good)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	for _, tc := range []struct{ name, s string }{
		{"empty", ""},
		{"short", good[:45]},
		{"long", good + "a"},
		{"bad prefix", "sk_prod_" + good[8:]},
		{"upper prefix", "SK_LIVE_" + good[8:]},
		{"random char flipped", flip(20)},
		{"checksum flipped", flip(44)},
		{"non-base62", good[:20] + "-" + good[21:]},
		{"id", NewID(Live)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, ok := ParseSecret(tc.s); ok {
				t.Fatalf("accepted %q", tc.s)
			}
		})
	}
}

func TestSecretRedacted(t *testing.T) {
	t.Parallel()
	s := NewSecret(Live)
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %s", s, s), s.LogValue().String()} {
		if strings.Contains(out, s.Reveal()[10:]) {
			t.Fatalf("secret printed: %s", out)
		}
	}
	if Hint(s.Reveal()) != s.Reveal()[:8]+"…"+s.Reveal()[42:] {
		t.Fatal(Hint(s.Reveal()))
	}
}

func TestDecide(t *testing.T) {
	t.Parallel()
	wl := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}
	base := func() *Facts {
		return &Facts{APIKeyID: "id", Mode: Live, Scopes: []string{"a:r", "a:w"}, IPWhitelist: wl}
	}
	req := func(ip string, scopes ...string) *Request {
		r := &Request{Now: 1000, RequiredScopes: scopes, AllowedModes: ModesOf(Live)}
		if ip != "" {
			r.ClientIP = netip.MustParseAddr(ip)
		}
		return r
	}
	for _, tc := range []struct {
		name string
		f    func() *Facts
		r    *Request
		want Decision
	}{
		{"allow", base, req("10.1.2.3", "a:r"), Allow},
		{"allow all scopes", base, req("10.1.2.3", "a:r", "a:w"), Allow},
		{"unknown", func() *Facts { return nil }, req("10.1.2.3", "a:r"), DenyInvalid},
		{"revoked", func() *Facts { f := base(); f.Revoked = true; return f }, req("10.1.2.3", "a:r"), DenyInvalid},
		{"expired", func() *Facts { f := base(); f.ExpiresAt = 1000; return f }, req("10.1.2.3", "a:r"), DenyInvalid},
		{"not yet expired", func() *Facts { f := base(); f.ExpiresAt = 1001; return f }, req("10.1.2.3", "a:r"), Allow},
		{"mode", func() *Facts { f := base(); f.Mode = Test; return f }, req("10.1.2.3", "a:r"), DenyMode},
		{"mode before scope", func() *Facts { f := base(); f.Mode = Test; return f }, req("1.1.1.1", "z:z"), DenyMode},
		{"scope", base, req("10.1.2.3", "a:r", "b:r"), DenyScope},
		{"no required scopes", base, req("10.1.2.3"), DenyScope},
		{"zero-scope key", func() *Facts { f := base(); f.Scopes = nil; return f }, req("10.1.2.3", "a:r"), DenyScope},
		{"scope before ip", base, req("1.1.1.1", "b:r"), DenyScope},
		{"ip", base, req("11.0.0.1", "a:r"), DenyIP},
		{"ipv4-mapped", base, req("::ffff:10.9.9.9", "a:r"), Allow},
		{"ipv6", base, req("2001:db8::1", "a:r"), Allow},
		{"no ip given", base, req("", "a:r"), Allow},
		{"empty whitelist", func() *Facts { f := base(); f.IPWhitelist = nil; return f }, req("1.1.1.1", "a:r"), Allow},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Decide(tc.f(), tc.r); got != tc.want {
				t.Fatalf("Decide = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestValidScope(t *testing.T) {
	t.Parallel()
	for s, ok := range map[string]bool{
		"payment:read": true, "a:b:c": true, "a-b_c1:d": true, "a:b2": true,
		"": false, "payment": false, ":read": false, "payment:": false, "Payment:read": false,
		"1a:b": false, "a::b": false, "a:1b": false, "a:-b": false, "pаyment:read": false, "a:b ": false,
	} {
		if ValidScope(s) != ok {
			t.Errorf("ValidScope(%q) = %v", s, !ok)
		}
	}
}

func TestParseIPWhitelist(t *testing.T) {
	t.Parallel()
	strs, prefixes, err := ParseIPWhitelist([]string{"192.168.1.100", "192.168.1.0/24", "2001:DB8::/32", "::ffff:10.0.0.0/104", "192.168.1.100/32"})
	if err != nil || fmt.Sprint(strs) != "[192.168.1.100 192.168.1.0/24 2001:db8::/32 10.0.0.0/8]" || len(prefixes) != 4 {
		t.Fatalf("%v %v %v", strs, prefixes, err)
	}
	for in, msg := range map[string]string{
		"300.1.1.1":      "not an IP address",
		"10.0.0.0/33":    "not a valid CIDR",
		"01.2.3.4":       "not an IP address",
		"fe80::1%eth0":   "zones are not allowed",
		"192.168.1.5/24": "192.168.1.5/24: did you mean 192.168.1.0/24?",
		"":               "not an IP address",
		"10.0.0.0/-1":    "not a valid CIDR",
	} {
		_, _, err := ParseIPWhitelist([]string{in})
		if err == nil || !strings.Contains(err.Error(), msg) || !strings.HasPrefix(err.Error(), "ipWhitelist[0] ") {
			t.Errorf("%q: %v", in, err)
		}
	}
}

func TestNormalizeName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{" a ": "a", "Prod Key": "Prod Key", strings.Repeat("ü", 128): strings.Repeat("ü", 128)} {
		if got, err := NormalizeName(in); err != nil || got != want {
			t.Errorf("%q → %q %v", in, got, err)
		}
	}
	for _, in := range []string{"", " ", strings.Repeat("ü", 129), "a\x00", "a\u0085b", "\xff"} {
		if _, err := NormalizeName(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func BenchmarkDecideCIDR10(b *testing.B) {
	f := &Facts{Mode: Live, Scopes: []string{"payment:read", "payment:write"}}
	for i := range 10 {
		f.IPWhitelist = append(f.IPWhitelist, netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", i)))
	}
	r := &Request{Now: 1, RequiredScopes: []string{"payment:read"}, AllowedModes: ModesOf(Live), ClientIP: netip.MustParseAddr("10.9.1.1")}
	b.ReportAllocs()
	for b.Loop() {
		if Decide(f, r) != Allow {
			b.Fatal("deny")
		}
	}
}

func TestCRCMatchesLibrary(t *testing.T) {
	t.Parallel()
	for n := range 100 {
		s := strings.Repeat("sk_live_AbZ09", 8)[:n]
		if got, want := crc32IEEEString(s), crc32.ChecksumIEEE([]byte(s)); got != want {
			t.Fatalf("len %d: %08x want %08x", n, got, want)
		}
	}
}

func BenchmarkParseSecret(b *testing.B) {
	s := NewSecret(Live).Reveal()
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := ParseSecret(s); !ok {
			b.Fatal("rejected")
		}
	}
}

func TestValidWorkspaceID(t *testing.T) {
	t.Parallel()
	for s, ok := range map[string]bool{
		"ws_1": true, "A.b-c_9": true, strings.Repeat("a", 64): true,
		"": false, ".": false, "..": false, strings.Repeat("a", 65): false, "ws/1": false, "ws%2F": false, "ws 1": false, "wś": false,
	} {
		if ValidWorkspaceID(s) != ok {
			t.Errorf("ValidWorkspaceID(%q) = %v", s, !ok)
		}
	}
}
