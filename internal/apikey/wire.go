package apikey

// VerifyPath is the sidecar's verify endpoint: the plugin sends to it and
// the sidecar routes it, both from this constant.
const VerifyPath = "/internal/v1/verify"

// VerifyRequest is the body of POST /internal/v1/verify (docs/CONTRACT.md §9.3). Without
// ClientIP the IP rule is not evaluated: the caller evaluates it from the
// returned whitelist with CheckIP.
type VerifyRequest struct {
	Key            string   `json:"key"`
	ClientIP       string   `json:"clientIp,omitempty"`
	RequiredScopes []string `json:"requiredScopes"`
	AllowedModes   []string `json:"allowedModes"`
}

// VerifyResult is the data of the verify answer. Key facts are present only
// when the key is known and valid (DenyCode is not 4012); then scopes and
// ipWhitelist are always arrays, possibly empty.
type VerifyResult struct {
	Allow       bool     `json:"allow"`
	DenyCode    string   `json:"denyCode"`
	APIKeyID    string   `json:"apiKeyId,omitempty"`
	WorkspaceID string   `json:"workspaceId,omitempty"`
	Mode        string   `json:"mode,omitempty"`
	Scopes      []string `json:"scopes"`
	IPWhitelist []string `json:"ipWhitelist"`
	ExpiresAt   string   `json:"expiresAt,omitempty"` // RFC 3339; for this secret
	// CacheMs bounds how long the caller may cache this answer: the
	// revocation bound (1 s) minus how stale the sidecar's own view may be
	// (0 with bbolt; up to 0.7 s with a shared PostgreSQL store).
	CacheMs int `json:"cacheMs,omitempty"`
}

// VerifyDenied is the data of a verify answer for a key that is unknown,
// malformed, revoked or expired: no facts at all.
type VerifyDenied struct {
	Allow    bool   `json:"allow"`
	DenyCode string `json:"denyCode"`
	CacheMs  int    `json:"cacheMs,omitempty"`
}

// RevocationBound is how soon a revoked key, an expired key or a rolled-out
// secret is rejected at every gateway node (docs/CONTRACT.md §10.1).
const RevocationBound = 1000 // milliseconds
