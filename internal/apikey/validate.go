package apikey

import (
	"fmt"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits of a key's fields (docs/CONTRACT.md §5).
const (
	MaxNameRunes   = 128
	MaxScopes      = 64
	MaxIPWhitelist = 100
	MaxScopeLen    = 128
)

// FieldError is a validation failure of one field; the message names the
// field and the rule.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Msg }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// NormalizeName trims white space and checks a key name: valid UTF-8, no
// control characters, 1–128 code points.
func NormalizeName(s string) (string, error) {
	if !utf8.ValidString(s) {
		return "", fieldErr("name", "name must be valid UTF-8")
	}
	s = strings.TrimSpace(s)
	n := 0
	for _, r := range s {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return "", fieldErr("name", "name must not contain control characters")
		}
		n++
	}
	if n < 1 || n > MaxNameRunes {
		return "", fieldErr("name", "name must be 1-128 characters")
	}
	return s, nil
}

// ValidScope reports whether s matches ^[a-z][a-z0-9_-]*(:[a-z][a-z0-9_-]*)+$.
func ValidScope(s string) bool {
	if len(s) == 0 || len(s) > MaxScopeLen {
		return false
	}
	parts := 0
	segStart := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ':':
			if segStart {
				return false
			}
			segStart = true
			parts++
		case c >= 'a' && c <= 'z':
			segStart = false
		case (c >= '0' && c <= '9') || c == '_' || c == '-':
			if segStart {
				return false
			}
		default:
			return false
		}
	}
	return !segStart && parts >= 1
}

// NormalizeScopes checks scope codes and removes duplicates keeping the
// first. catalog, when non-nil, is the set of allowed codes. The result is
// never nil.
func NormalizeScopes(scopes []string, catalog map[string]bool) ([]string, error) {
	if len(scopes) > MaxScopes {
		return nil, fieldErr("scopes", "scopes must have at most %d entries", MaxScopes)
	}
	out := make([]string, 0, len(scopes))
	for i, s := range scopes {
		if !ValidScope(s) {
			return nil, fieldErr("scopes", "scopes[%d] must match ^[a-z][a-z0-9_-]*(:[a-z][a-z0-9_-]*)+$", i)
		}
		if catalog != nil && !catalog[s] {
			return nil, fieldErr("scopes", "scopes[%d] %q is not a known scope", i, s)
		}
		dup := false
		for _, o := range out {
			if o == s {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, s)
		}
	}
	return out, nil
}

// ParseIPWhitelist checks a whitelist and returns its canonical strings
// (duplicates removed, order kept) and the prefixes to match. A single
// address is kept as an address; IPv4-mapped IPv6 is unmapped.
func ParseIPWhitelist(list []string) ([]string, []netip.Prefix, error) {
	if len(list) > MaxIPWhitelist {
		return nil, nil, fieldErr("ipWhitelist", "ipWhitelist must have at most %d entries", MaxIPWhitelist)
	}
	strs := make([]string, 0, len(list))
	prefixes := make([]netip.Prefix, 0, len(list))
	for i, raw := range list {
		p, canon, err := parseIPEntry(raw)
		if err != nil {
			return nil, nil, fieldErr("ipWhitelist", "ipWhitelist[%d] %s", i, err.Error())
		}
		dup := false
		for _, q := range prefixes {
			if q == p {
				dup = true
				break
			}
		}
		if !dup {
			strs = append(strs, canon)
			prefixes = append(prefixes, p)
		}
	}
	return strs, prefixes, nil
}

// ParseCanonical parses whitelist entries already in canonical form (as
// stored or as the sidecar answers them) without the checks and messages
// of ParseIPWhitelist: a single address or a masked CIDR, nothing else.
func ParseCanonical(list []string) ([]netip.Prefix, error) {
	if len(list) == 0 {
		return nil, nil
	}
	out := make([]netip.Prefix, len(list))
	for i, s := range list {
		var err error
		if strings.IndexByte(s, '/') < 0 {
			var a netip.Addr
			a, err = netip.ParseAddr(s)
			out[i] = netip.PrefixFrom(a, a.BitLen())
		} else {
			out[i], err = netip.ParsePrefix(s)
		}
		if err != nil || out[i].Addr().Zone() != "" || out[i].Masked() != out[i] {
			return nil, fmt.Errorf("whitelist entry %d is not canonical", i)
		}
	}
	return out, nil
}

type ipErr string

func (e ipErr) Error() string { return string(e) }

func parseIPEntry(raw string) (netip.Prefix, string, error) {
	q := quoteEntry(raw)
	if strings.ContainsRune(raw, '%') {
		return netip.Prefix{}, "", ipErr(q + ": zones are not allowed")
	}
	if !strings.ContainsRune(raw, '/') {
		a, err := netip.ParseAddr(raw)
		if err != nil {
			return netip.Prefix{}, "", ipErr(q + ": not an IP address or CIDR")
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), a.String(), nil
	}
	p, err := netip.ParsePrefix(raw)
	if err != nil {
		return netip.Prefix{}, "", ipErr(q + ": not a valid CIDR (address or prefix length out of range)")
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, "", ipErr(fmt.Sprintf("%s: did you mean %s?", q, m))
	}
	return p, p.String(), nil
}

// quoteEntry shows a user's entry in a message without letting control
// characters or huge inputs through.
func quoteEntry(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	if strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) || r == utf8.RuneError }) >= 0 {
		return fmt.Sprintf("%q", s)
	}
	return s
}

// MaxWorkspaceIDLen bounds a workspace id.
const MaxWorkspaceIDLen = 64

// ValidWorkspaceID reports whether s is a workspace id: 1–64 characters of
// A-Z a-z 0-9 . _ - and not "." or "..". The plugin and the sidecar read the
// workspace from the path with this same rule.
func ValidWorkspaceID(s string) bool {
	if len(s) == 0 || len(s) > MaxWorkspaceIDLen || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}
