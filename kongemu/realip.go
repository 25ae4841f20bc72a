package kongemu

import (
	"net/http"
	"net/netip"
	"strings"
)

// realIP resolves the client address the way nginx's realip module does
// with Kong's trusted_ips, real_ip_header and real_ip_recursive settings.
type realIP struct {
	trusted   []netip.Prefix // empty: trust nobody (Kong's default)
	header    string         // canonical header name, default X-Real-IP
	recursive bool
}

// newRealIP takes trusted_ips, real_ip_header and real_ip_recursive with
// Kong's defaults: nobody trusted, X-Real-IP, off
// (kong/templates/kong_defaults.lua, 3.8.1 and 3.9.1; nginx_kong.lua turns
// them into set_real_ip_from, real_ip_header and real_ip_recursive).
func newRealIP(kc *KongConf) *realIP {
	ri := &realIP{trusted: kc.TrustedIPs, header: kc.RealIPHeader, recursive: kc.RealIPRecursive}
	if ri.header == "" {
		ri.header = "X-Real-IP"
	}
	return ri
}

func (ri *realIP) isTrusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range ri.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// resolve returns the forwarded client address and port for a request from
// peer. ok is false when the peer was kept. A port of 0 means none was given.
func (ri *realIP) resolve(peer netip.AddrPort, h http.Header) (addr netip.Addr, port uint16, ok bool) {
	addr, port = peer.Addr().Unmap(), peer.Port()
	if !ri.isTrusted(addr) {
		return addr, port, false
	}
	var value string
	if http.CanonicalHeaderKey(ri.header) == "X-Forwarded-For" {
		value = strings.Join(h.Values("X-Forwarded-For"), ",")
	} else {
		value = h.Get(ri.header)
	}
	if strings.TrimSpace(value) == "" {
		return addr, port, false
	}
	// Walk the list from the right. Without recursion the last entry wins;
	// with it, trusted entries are skipped and the first untrusted one wins
	// (or the leftmost entry when all are trusted). An unparsable entry ends
	// the walk, keeping what was found so far.
	entries := strings.Split(value, ",")
	found := false
	for i := len(entries) - 1; i >= 0; i-- {
		e := strings.TrimSpace(entries[i])
		if e == "" {
			continue
		}
		a, p, good := parseAddrPort(e)
		if !good {
			break
		}
		addr, port, found = a, p, true
		if !ri.recursive || !ri.isTrusted(a) {
			break
		}
	}
	if !found {
		return peer.Addr().Unmap(), peer.Port(), false
	}
	return addr, port, true
}

// parseAddrPort accepts "1.2.3.4", "1.2.3.4:80", "::1", "[::1]:80".
func parseAddrPort(s string) (netip.Addr, uint16, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), 0, true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), ap.Port(), true
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil {
			return a.Unmap(), 0, true
		}
	}
	return netip.Addr{}, 0, false
}

// ParseTrustedIPs parses a comma-separated list of addresses and CIDRs
// (Kong's trusted_ips). "0.0.0.0/0,::/0" trusts everyone.
func ParseTrustedIPs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if strings.Contains(f, "/") {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				return nil, err
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, err
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
