package apikey

import (
	"net/netip"
)

// Facts are what the access decision needs to know about one key (for one
// secret of it: a rolled-out secret has its own, earlier ExpiresAt).
type Facts struct {
	APIKeyID    string
	WorkspaceID string
	Mode        Mode
	Revoked     bool
	ExpiresAt   int64 // Unix seconds; 0 = never
	Scopes      []string
	IPWhitelist []netip.Prefix // empty: no IP restriction
}

// Modes is a set of modes, as a bit set (1<<Live | 1<<Test).
type Modes uint8

// Has reports whether m is in the set.
func (s Modes) Has(m Mode) bool { return s&(1<<m) != 0 }

// ModesOf builds a set.
func ModesOf(ms ...Mode) Modes {
	var s Modes
	for _, m := range ms {
		s |= 1 << m
	}
	return s
}

// Request holds the facts of one request that the decision needs.
type Request struct {
	Now            int64 // Unix seconds
	RequiredScopes []string
	AllowedModes   Modes
	// ClientIP is checked against a non-empty whitelist when valid; when
	// not valid the IP rule is skipped and left to the caller (CheckIP).
	ClientIP netip.Addr
}

// Decision is the outcome of Decide. Its envelope code is
// envelope.DenyCode: the one table of decisions and codes.
type Decision uint8

const (
	Allow Decision = iota
	DenyInvalid
	DenyMode
	DenyScope
	DenyIP
)

// Decide is the access decision of docs/CONTRACT.md §6.1, in its order: known, active and
// unexpired (f nil means unknown) → mode → every required scope → client IP.
// An empty RequiredScopes denies: a route must name what it needs, and a
// zero-scope key passes nowhere. Decide does not allocate.
func Decide(f *Facts, r *Request) Decision {
	if f == nil || f.Revoked || (f.ExpiresAt != 0 && r.Now >= f.ExpiresAt) {
		return DenyInvalid
	}
	if !r.AllowedModes.Has(f.Mode) {
		return DenyMode
	}
	if !HasScopes(f.Scopes, r.RequiredScopes) {
		return DenyScope
	}
	if r.ClientIP.IsValid() && !CheckIP(f.IPWhitelist, r.ClientIP) {
		return DenyIP
	}
	return Allow
}

// HasScopes reports whether granted holds every one of required, and
// required is not empty.
func HasScopes(granted, required []string) bool {
	if len(required) == 0 {
		return false
	}
next:
	for _, want := range required {
		for _, g := range granted {
			if g == want {
				continue next
			}
		}
		return false
	}
	return true
}

// CheckIP reports whether ip may use a key with this whitelist: an empty
// whitelist allows every address; IPv4-mapped IPv6 is unmapped first.
func CheckIP(whitelist []netip.Prefix, ip netip.Addr) bool {
	if len(whitelist) == 0 {
		return true
	}
	ip = ip.Unmap().WithZone("")
	for _, p := range whitelist {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
