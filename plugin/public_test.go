package plugin

import (
	"strings"
	"testing"
)

// TestPublicValuesRefused: the demo secret and portal codes of
// kong/kong.yml, and deploy/kong.yml's CHANGE-ME placeholders, are refused,
// so that neither file can run as is; the message never repeats a value.
func TestPublicValuesRefused(t *testing.T) {
	t.Parallel()
	const jwtMsg = "jwt_secret is the public demo secret of kong/kong.yml or a CHANGE-ME placeholder"
	for _, tc := range []struct {
		name string
		cfg  *Config
		want string
	}{
		{"demo jwt_secret", manageConfig(func(c *Config) { c.JWTSecret = DemoJWTSecret }), jwtMsg},
		{"placeholder jwt_secret", manageConfig(func(c *Config) { c.JWTSecret = "CHANGE-ME-to-a-secret-of-32-bytes-or-more" }), jwtMsg},
		{"lower-case placeholder", manageConfig(func(c *Config) { c.JWTSecret = " change-me-to-a-secret-of-32-bytes-or-more" }), jwtMsg},
		{"demo partner code", manageConfig(func(c *Config) {
			c.PortalCodes = map[string]string{DemoPartnerCode: "PARTNER", "good-code-1": "PUBLIC"}
		}),
			`portal_codes: the access code of portal "PARTNER" is a public demo code`},
		{"demo public code", manageConfig(func(c *Config) { c.PortalCodes = map[string]string{DemoPublicCode: "PUBLIC"} }),
			`portal_codes: the access code of portal "PUBLIC" is a public demo code`},
		{"placeholder code", manageConfig(func(c *Config) { c.PortalCodes = map[string]string{"CHANGE-ME-public-code": "PUBLIC"} }),
			`portal_codes: the access code of portal "PUBLIC"`},
		{"placeholder gateway_secret", enforceConfig("http://127.0.0.1:1", func(c *Config) { c.GatewaySecret = "CHANGE-ME-gateway-secret" }),
			"gateway_secret is a public demo value or a CHANGE-ME placeholder"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want %q", err, tc.want)
			}
			for _, v := range []string{DemoJWTSecret, DemoPartnerCode, DemoPublicCode, "CHANGE-ME-"} {
				if strings.Contains(err.Error(), v) {
					t.Errorf("the message repeats the value %q: %v", v, err)
				}
			}
		})
	}
	// Values that merely contain the words are fine.
	ok := manageConfig(func(c *Config) {
		c.JWTSecret = "my-secret-not-" + DemoJWTSecret
		c.PortalCodes = map[string]string{"x-" + DemoPartnerCode: "PARTNER", "please-CHANGE-ME-never": "PUBLIC"}
	})
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
}
