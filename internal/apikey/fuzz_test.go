package apikey

import (
	"net/netip"
	"strings"
	"testing"
)

// Property: ParseSecret accepts exactly the strings of the key format whose
// checksum matches, never panics, and agrees with a slow reference.
func FuzzParseSecret(f *testing.F) {
	f.Add(NewSecret(Live).Reveal())
	f.Add(NewSecret(Test).Reveal())
	f.Add("sk_live_" + strings.Repeat("0", 38))
	f.Add("")
	f.Add("sk_live_\xff")
	f.Fuzz(func(t *testing.T, s string) {
		m, ok := ParseSecret(s)
		want := secretRe.MatchString(s)
		if want {
			sum := make([]byte, 6)
			putChecksum(sum, crc32IEEEString(s[:40]))
			want = s[40:] == string(sum)
		}
		if ok != want {
			t.Fatalf("ParseSecret(%q) = %v, reference %v", s, ok, want)
		}
		if ok && !strings.HasPrefix(s, m.Prefix()) {
			t.Fatalf("mode %v for %q", m, s)
		}
	})
}

// Property: ParseIPWhitelist never panics; what it accepts is canonical
// (parsing its own output gives the same output) and every prefix is masked.
func FuzzParseIPWhitelist(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "192.168.1.0/24", "2001:db8::/32", "::ffff:1.2.3.4", "fe80::1%eth0", "01.2.3.4", "1.2.3.4/33", "192.168.1.5/24"} {
		f.Add(s, "10.0.0.0/8")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		strs, prefixes, err := ParseIPWhitelist([]string{a, b})
		if err != nil {
			return
		}
		for _, p := range prefixes {
			if p.Masked() != p || p.Addr().Zone() != "" || p.Addr().Is4In6() {
				t.Fatalf("non-canonical prefix %v from %q %q", p, a, b)
			}
		}
		again, _, err := ParseIPWhitelist(strs)
		if err != nil || strings.Join(again, ",") != strings.Join(strs, ",") {
			t.Fatalf("not canonical: %v → %v (%v)", strs, again, err)
		}
		_ = CheckIP(prefixes, netip.MustParseAddr("::ffff:10.1.1.1"))
	})
}
