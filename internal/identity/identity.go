// Package identity is the signed assertion the plugin hands the sidecar on
// management requests (docs/CONTRACT.md §9.1): a JWT, HS256 with the gateway secret, that
// lives at most MaxTTL.
//
// The plugin signs it after checking the caller's own JWT, role and portal;
// the sidecar trusts nothing else on a management request but this assertion
// or the admin token.
package identity

import (
	"crypto/rand"
	"errors"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Header carries the assertion; clients' X-Keygate-* headers are stripped
// by the plugin.
const Header = "X-Keygate-Identity"

// HeaderPrefix is the prefix of every header the plugin owns.
const HeaderPrefix = "X-Keygate-"

// MaxTTL bounds exp - iat.
const MaxTTL = 60 * time.Second

// Leeway is the clock skew Verify allows between nodes: an assertion is
// accepted until exp + Leeway, so a sidecar remembers its jti that long.
const Leeway = 5 * time.Second

// MaxIDLen bounds a jti.
const MaxIDLen = 64

// RoleOwner is the only role that may manage keys.
const RoleOwner = "OWNER"

// Claims of the assertion.
type Claims struct {
	Subject       string `json:"sub"`
	WorkspaceID   string `json:"workspaceId"`
	Role          string `json:"role"`
	Portal        string `json:"portal"`
	RequestID     string `json:"requestId"`
	AllowTestMode bool   `json:"allowTestMode"`
	// Path and Method are the request the assertion was made for: an
	// assertion seen in transit or in a log cannot be replayed on another
	// key or operation of the workspace (list and create share a path, and
	// so do get and revoke).
	Path   string `json:"path"`
	Method string `json:"method"`
	// ID (jti) is unique per assertion (Sign draws 128 random bits when it
	// is empty): a sidecar accepts each one once (docs/SECURITY.md).
	ID        string `json:"jti"`
	IssuedAt  int64  `json:"iat"`
	ExpiresAt int64  `json:"exp"`
}

// ErrInvalid is every reason an assertion is not accepted.
var ErrInvalid = errors.New("invalid identity assertion")

type jwtClaims struct {
	Claims
}

func numericDate(unix int64) *jwt.NumericDate {
	if unix == 0 {
		return nil
	}
	return jwt.NewNumericDate(time.Unix(unix, 0))
}

func (c jwtClaims) GetExpirationTime() (*jwt.NumericDate, error) {
	return numericDate(c.ExpiresAt), nil
}
func (c jwtClaims) GetIssuedAt() (*jwt.NumericDate, error)  { return numericDate(c.IssuedAt), nil }
func (c jwtClaims) GetNotBefore() (*jwt.NumericDate, error) { return nil, nil }
func (c jwtClaims) GetIssuer() (string, error)              { return "", nil }
func (c jwtClaims) GetSubject() (string, error)             { return c.Subject, nil }
func (c jwtClaims) GetAudience() (jwt.ClaimStrings, error)  { return nil, nil }

// Sign returns the assertion for c, issued now and valid for ttl (≤ MaxTTL).
func Sign(secret []byte, c Claims, now time.Time, ttl time.Duration) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("identity: empty gateway secret")
	}
	if ttl <= 0 || ttl > MaxTTL {
		ttl = MaxTTL
	}
	c.IssuedAt = now.Unix()
	c.ExpiresAt = now.Add(ttl).Unix()
	if c.ID == "" {
		c.ID = rand.Text()
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, jwtClaims{c}).SignedString(secret)
}

// Verify checks the assertion's signature (HS256 only), its lifetime
// (exp required, exp-iat ≤ MaxTTL, Leeway for clock skew between nodes),
// that it names a jti, and returns its claims. Every failure is ErrInvalid.
// Whether the jti was seen before is the caller's to check.
func Verify(secret []byte, token string, now time.Time) (Claims, error) {
	if len(secret) == 0 || len(token) == 0 || len(token) > 4096 {
		return Claims{}, ErrInvalid
	}
	var c jwtClaims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return secret, nil },
		jwt.WithValidMethods([]string{"HS256"}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(Leeway),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	if err != nil || c.ExpiresAt-c.IssuedAt > int64(MaxTTL/time.Second) || c.ExpiresAt <= c.IssuedAt ||
		c.WorkspaceID == "" || c.Role == "" || c.Path == "" || c.Method == "" || c.ID == "" || len(c.ID) > MaxIDLen {
		return Claims{}, ErrInvalid
	}
	return c.Claims, nil
}

// Bearer returns the token of an Authorization value "Bearer <token>": the
// scheme case-insensitive, spaces or tabs around the token allowed, none
// inside it. It takes a string or the bytes of a header, without copying.
func Bearer[T string | []byte](v T) (T, bool) {
	const scheme = "bearer"
	var zero T
	if len(v) <= len(scheme)+1 || (v[len(scheme)] != ' ' && v[len(scheme)] != '\t') {
		return zero, false
	}
	for i := 0; i < len(scheme); i++ {
		if v[i]|0x20 != scheme[i] {
			return zero, false
		}
	}
	start, end := len(scheme), len(v)
	for start < end && (v[start] == ' ' || v[start] == '\t') {
		start++
	}
	for end > start && (v[end-1] == ' ' || v[end-1] == '\t') {
		end--
	}
	if start == end {
		return zero, false
	}
	for i := start; i < end; i++ {
		if v[i] == ' ' || v[i] == '\t' {
			return zero, false
		}
	}
	return v[start:end], true
}
