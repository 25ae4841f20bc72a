package plugin

import "strings"

// Values that are public: the development secrets of kong/kong.yml (the
// demo and the tests replace them with fresh ones) and the CHANGE-ME
// placeholders of deploy/kong.yml. Anyone can mint an OWNER token with a
// public jwt_secret or present a public portal code, so a configuration
// holding one is refused: a node started with the demo configuration, or
// with a deployment file whose placeholders were not replaced, serves no
// request (500/5000, and kong.log says why).
const (
	DemoJWTSecret   = "demo-jwt-secret-for-development-only-0123456789"
	DemoPartnerCode = "demo-partner-code"
	DemoPublicCode  = "demo-public-code"
	// PlaceholderPrefix starts every value of deploy/kong.yml an operator
	// must replace.
	PlaceholderPrefix = "CHANGE-ME"
)

// publicValue reports whether v is a demo value or a placeholder.
func publicValue(v string) bool {
	v = strings.TrimSpace(v)
	return v == DemoJWTSecret || v == DemoPartnerCode || v == DemoPublicCode ||
		(len(v) >= len(PlaceholderPrefix) && strings.EqualFold(v[:len(PlaceholderPrefix)], PlaceholderPrefix))
}

// validatePublic refuses public secrets and access codes (the values are
// public, but the message names only the field).
func validatePublic(s *settings, p *problems) {
	if publicValue(string(s.secret)) {
		p.add("gateway_secret is a public demo value or a %s placeholder: set your own", PlaceholderPrefix)
	}
	if s.role != RoleManage {
		return
	}
	if publicValue(string(s.jwtSecret)) {
		p.add("jwt_secret is the public demo secret of kong/kong.yml or a %s placeholder (anyone could mint an OWNER token): set your own, or use jwt_public_keys / jwks_url", PlaceholderPrefix)
	}
	for code, portal := range s.portalCodes {
		if publicValue(code) {
			p.add("portal_codes: the access code of portal %q is a public demo code or a %s placeholder: set your own", portal, PlaceholderPrefix)
		}
	}
}
