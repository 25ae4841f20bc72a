package plugin

// Client-sent headers that name what keygate tells the upstream.
//
// Kong's nginx template turns underscores_in_headers on
// (kong/templates/nginx_kong.lua, 3.8.0 and 3.9.0), so a client's
// X_Api_Key_Id reaches the plugin and, unless the plugin removes it, the
// upstream — where CGI/WSGI-style servers fold '_' and '-' together
// (both become HTTP_X_API_KEY_ID). The plugin therefore removes, before the
// request is proxied, every client header that spells X-Keygate-*,
// X-Api-Key-Id, X-Workspace-Id or X-Api-Key-Mode in any case with '_' for
// any '-'. The ones it sets itself in their exact spelling are replaced by
// set_headers (ngx.req.set_header replaces every line of that name), so
// they cost no call; each other one costs one clear_header, on requests
// that carry it only.

import "strings"

// reservedHeader reports whether a request header name is one of keygate's
// (see above). Names come lower-case from get_headers, but any case is
// accepted.
func reservedHeader(name string) bool {
	// The shortest reserved names: "x-keygate-" plus one byte, "x-api-key-id".
	if len(name) < len("x-keygate-")+1 || name[0]|0x20 != 'x' || (name[1] != '-' && name[1] != '_') {
		return false
	}
	rest := name[2:]
	return (len(rest) > len("keygate-") && foldEqual(rest[:len("keygate-")], "keygate-")) ||
		foldEqual(rest, "api-key-id") || foldEqual(rest, "workspace-id") || foldEqual(rest, "api-key-mode")
}

// foldEqual reports whether a equals want (lower case, '-') when a's
// ASCII letters are lowered and its '_' read as '-'.
func foldEqual(a, want string) bool {
	if len(a) != len(want) {
		return false
	}
	for i := 0; i < len(a); i++ {
		c := a[i]
		switch {
		case c == '_':
			c = '-'
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		if c != want[i] {
			return false
		}
	}
	return true
}

// replacedUpstream reports whether set_headers of an allowed enforce
// request replaces the header name: one of the three identity headers in
// its '-' spelling.
func replacedUpstream(name string) bool {
	return len(name) > 2 && (name[1] == '-') &&
		(foldEqualDash(name, "x-api-key-id") || foldEqualDash(name, "x-workspace-id") || foldEqualDash(name, "x-api-key-mode"))
}

// foldEqualDash is a case-insensitive comparison that does not read '_'
// as '-'.
func foldEqualDash(a, want string) bool {
	if len(a) != len(want) {
		return false
	}
	for i := 0; i < len(a); i++ {
		c := a[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != want[i] {
			return false
		}
	}
	return true
}

// clearReserved removes the client's reserved headers that the answer does
// not replace itself (keep reports those); false when a PDK call failed
// (the request has been answered 500).
func (r *call) clearReserved(h map[string][]string, keep func(string) bool) bool {
	for name := range h {
		if reservedHeader(name) && !keep(name) {
			if err := r.k.clearHeader(name); err != nil {
				r.internal("kong.service.request.clear_header", err)
				return false
			}
		}
	}
	return true
}

// clearKeySpellings removes, for hide_credentials, every header that spells
// a key header with '_' for '-' (X_API_KEY for X-API-Key). Kong turns
// underscores_in_headers on (kong/templates/nginx_kong.lua, 3.8.0 and
// 3.9.0) and clear_header removes only the exact name, so such a copy of
// the key would reach the upstream, where CGI/WSGI-style servers read it
// as the key header itself. The key is never taken from such a spelling
// (findKey reads the configured names only). One clear_header per header
// found; none when there is none. It reports false when a PDK call failed
// (the request is answered).
func (r *call) clearKeySpellings(h map[string][]string) bool {
	for name := range h {
		if strings.IndexByte(name, '_') < 0 {
			continue
		}
		for _, kh := range r.in.keyHeaders {
			if foldEqual(name, kh.lower) {
				if err := r.k.clearHeader(name); err != nil {
					r.internal("kong.service.request.clear_header", err)
					return false
				}
				break
			}
		}
	}
	return true
}
