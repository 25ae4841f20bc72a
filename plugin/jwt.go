package plugin

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MaxTokenLen caps the Authorization value on management routes (8 KiB).
const MaxTokenLen = 8 << 10

// MinRSABits is the smallest RSA key accepted, from PEM or JWKS.
const MinRSABits = 2048

// family is a JWT algorithm family: it decides which kind of key verifies it.
type family uint8

const (
	famNone family = iota
	famHMAC
	famRSA // RS* and PS*
	famEC
	famEd25519
)

var algFamilies = map[string]family{
	"HS256": famHMAC, "HS384": famHMAC, "HS512": famHMAC,
	"RS256": famRSA, "RS384": famRSA, "RS512": famRSA,
	"PS256": famRSA, "PS384": famRSA, "PS512": famRSA,
	"ES256": famEC, "ES384": famEC, "ES512": famEC,
	"EdDSA": famEd25519,
}

// ecCurveBits is the curve an ES* algorithm requires.
var ecCurveBits = map[string]int{"ES256": 256, "ES384": 384, "ES512": 521}

// keyring holds the verification keys of a manage instance. A token's key
// is chosen by its algorithm's family only: an HS* token is only ever
// checked against jwt_secret, never against a public key (no algorithm
// confusion), and the algorithm must be in jwt_algorithms before any key is
// looked at (WithValidMethods).
type keyring struct {
	hmac []byte
	rsa  []*rsa.PublicKey
	ec   []*ecdsa.PublicKey
	ed   []ed25519.PublicKey
	jwks *jwksSet // nil without jwks_url
}

// compileJWT checks the JWT settings and builds the keyring and the parser
// options.
func compileJWT(s *settings, p *problems) (*keyring, []jwt.ParserOption) {
	kr := &keyring{}
	fams := map[family]bool{}
	for i, alg := range s.algorithms {
		f, ok := algFamilies[alg]
		if !ok {
			p.add("jwt_algorithms[%d] %q is not supported (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384/512, EdDSA)", i, alg)
			continue
		}
		fams[f] = true
	}
	for i, raw := range s.publicKeys {
		key, err := parsePublicKeyPEM([]byte(raw))
		if err != nil {
			p.add("jwt_public_keys[%d]: %v", i, err)
			continue
		}
		switch k := key.(type) {
		case *rsa.PublicKey:
			kr.rsa = append(kr.rsa, k)
		case *ecdsa.PublicKey:
			kr.ec = append(kr.ec, k)
		case ed25519.PublicKey:
			kr.ed = append(kr.ed, k)
		}
	}
	if fams[famHMAC] {
		if len(s.jwtSecret) < MinHMACSecretLen {
			p.add("jwt_secret of at least %d bytes is required when jwt_algorithms has an HS algorithm", MinHMACSecretLen)
		}
		kr.hmac = s.jwtSecret
	}
	if s.jwksURL != "" {
		kr.jwks = jwksFor(s.jwksURL)
	}
	for _, fk := range []struct {
		f    family
		name string
		have int
	}{{famRSA, "RSA", len(kr.rsa)}, {famEC, "EC", len(kr.ec)}, {famEd25519, "Ed25519", len(kr.ed)}} {
		if fams[fk.f] && kr.jwks == nil && fk.have == 0 {
			p.add("jwt_algorithms has an %s algorithm but neither jwt_public_keys has an %s key nor jwks_url is set", fk.name, fk.name)
		}
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(s.algorithms),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(time.Duration(s.leewaySeconds) * time.Second),
	}
	if s.issuer != "" {
		opts = append(opts, jwt.WithIssuer(s.issuer))
	}
	if s.audience != "" {
		opts = append(opts, jwt.WithAudience(s.audience))
	}
	return kr, opts
}

var errNoKey = errors.New("no verification key for the token")

// keyfunc returns the candidate keys of the token's algorithm family.
func (kr *keyring) keyfunc(tok *jwt.Token) (any, error) {
	alg := tok.Method.Alg()
	kid, _ := tok.Header["kid"].(string)
	var keys []jwt.VerificationKey
	switch algFamilies[alg] {
	case famHMAC:
		if len(kr.hmac) == 0 {
			return nil, errNoKey
		}
		return kr.hmac, nil
	case famRSA:
		for _, k := range kr.rsa {
			keys = append(keys, k)
		}
	case famEC:
		for _, k := range kr.ec {
			if k.Curve.Params().BitSize == ecCurveBits[alg] {
				keys = append(keys, k)
			}
		}
	case famEd25519:
		for _, k := range kr.ed {
			keys = append(keys, k)
		}
	default:
		return nil, errNoKey
	}
	if kr.jwks != nil {
		keys = append(keys, kr.jwks.keysFor(alg, kid)...)
	}
	if len(keys) == 0 {
		return nil, errNoKey
	}
	return jwt.VerificationKeySet{Keys: keys}, nil
}

// parsePublicKeyPEM reads one PEM public key of a supported kind.
func parsePublicKeyPEM(data []byte) (crypto.PublicKey, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("not a PEM block")
	}
	if len(trimSpace(rest)) != 0 {
		return nil, errors.New("more than one PEM block; give one key per entry")
	}
	var key any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		cert, err = x509.ParseCertificate(block.Bytes)
		if err == nil {
			key = cert.PublicKey
		}
	default:
		return nil, fmt.Errorf("PEM type %q is not a public key (want PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE)", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", block.Type, err)
	}
	return checkPublicKey(key)
}

func checkPublicKey(key any) (crypto.PublicKey, error) {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < MinRSABits {
			return nil, fmt.Errorf("RSA key of %d bits; at least %d required", k.N.BitLen(), MinRSABits)
		}
		return k, nil
	case *ecdsa.PublicKey:
		switch k.Curve.Params().BitSize {
		case 256, 384, 521:
			return k, nil
		}
		return nil, errors.New("EC key on an unsupported curve (P-256, P-384, P-521)")
	case ed25519.PublicKey:
		return k, nil
	}
	return nil, fmt.Errorf("unsupported public key type %T", key)
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\r' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}
