package plugin

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	neturl "net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// JWKS refresh bounds.
const (
	// JWKSMinRefresh: at most one fetch of a JWKS URL per this interval,
	// whatever the number of unknown kids presented.
	JWKSMinRefresh = 10 * time.Second
	// JWKSMaxAge is the refresh interval: keys fetched longer ago than
	// this are fetched again before they are used (a request waits at most
	// JWKSFetchTimeout), so a key removed from the JWKS stops verifying
	// within JWKSMaxAge of its removal. While the JWKS cannot be fetched,
	// the last keys fetched stay in use for JWKSMaxStale more (an IdP blip
	// does not lock owners out), then no longer: fail closed, so a removed
	// key works at most JWKSMaxAge + JWKSMaxStale whatever the JWKS does.
	JWKSMaxAge = 60 * time.Second
	// JWKSMaxStale: how long past JWKSMaxAge the last keys stay in use
	// while every fetch fails.
	JWKSMaxStale = 60 * time.Second
	// JWKSFetchTimeout bounds one fetch, and so how long a request with an
	// unknown kid may wait for it.
	JWKSFetchTimeout = 3 * time.Second
	// JWKSMaxBody caps the JWKS document.
	JWKSMaxBody = 1 << 20
	// JWKSMaxKeys caps the keys taken from one document.
	JWKSMaxKeys = 100
)

// jwk is one parsed key of a JWKS.
type jwk struct {
	kid string
	alg string // "" when the JWKS does not restrict it
	key any    // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

type jwksSnapshot struct {
	byKid     map[string][]jwk
	all       []jwk
	fetchedAt time.Time
}

// jwksSet is the cached key set of one JWKS URL, shared by every instance
// that names the URL. A refresh is single-flight and rate-limited: a flood
// of tokens with unknown kids causes at most one fetch per minRefresh, and a
// request waits for a running fetch at most fetchTimeout.
type jwksSet struct {
	url          string
	shown        string // url with any password redacted: what logs name
	client       *http.Client
	minRefresh   time.Duration
	maxAge       time.Duration
	maxStale     time.Duration
	fetchTimeout time.Duration

	snap atomic.Pointer[jwksSnapshot]

	mu          sync.Mutex
	lastAttempt time.Time
	inflight    chan struct{}
	lastErr     string // why the last fetch failed; "" when it succeeded

	fetches atomic.Int64 // fetches started, for tests and metrics
}

var jwksRegistry sync.Map // url → *jwksSet

// jwksFor returns the shared key set of url.
func jwksFor(url string) *jwksSet {
	if s, ok := jwksRegistry.Load(url); ok {
		return s.(*jwksSet)
	}
	s, _ := jwksRegistry.LoadOrStore(url, newJWKSSet(url))
	return s.(*jwksSet)
}

func newJWKSSet(url string) *jwksSet {
	shown := "(jwks_url)"
	if u, err := neturl.Parse(url); err == nil {
		shown = u.Redacted()
	}
	return &jwksSet{
		url:   url,
		shown: shown,
		client: &http.Client{
			Timeout: JWKSFetchTimeout,
			// A redirect is followed only to https: whoever could answer a
			// plain-http fetch could hand the gateway signing keys of
			// their own (the first URL is https, or http to loopback only).
			CheckRedirect: func(req *http.Request, via []*http.Request) error {
				if len(via) >= 3 {
					return errors.New("too many redirects")
				}
				if req.URL.Scheme != "https" {
					return fmt.Errorf("JWKS redirect to %s refused: https only", req.URL.Scheme)
				}
				return nil
			},
		},
		minRefresh:   JWKSMinRefresh,
		maxAge:       JWKSMaxAge,
		maxStale:     JWKSMaxStale,
		fetchTimeout: JWKSFetchTimeout,
	}
}

// keysFor returns the keys that may verify a token of alg with kid ("" when
// the token has none). An unknown kid triggers a bounded refresh.
func (s *jwksSet) keysFor(alg, kid string) []jwt.VerificationKey {
	snap := s.snap.Load()
	if snap == nil {
		snap = s.refresh(true)
	} else if time.Since(snap.fetchedAt) > s.maxAge {
		// Past the refresh interval: fetch before using them, so that a key
		// removed from the JWKS stops verifying within maxAge. A failed
		// fetch keeps the previous keys (the IdP's removal is unknown).
		snap = s.refresh(true)
	}
	if snap != nil && kid != "" && len(snap.byKid[kid]) == 0 {
		snap = s.refresh(true)
	}
	if snap == nil || time.Since(snap.fetchedAt) > s.maxAge+s.maxStale {
		return nil // never fetched, or stale past the bound: fail closed
	}
	cands := snap.all
	if kid != "" {
		cands = snap.byKid[kid]
	}
	var out []jwt.VerificationKey
	for _, k := range cands {
		if k.alg != "" && k.alg != alg {
			continue
		}
		if keyFits(alg, k.key) {
			out = append(out, k.key)
		}
	}
	return out
}

func keyFits(alg string, key any) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return algFamilies[alg] == famRSA
	case *ecdsa.PublicKey:
		return algFamilies[alg] == famEC && k.Curve.Params().BitSize == ecCurveBits[alg]
	case ed25519.PublicKey:
		return algFamilies[alg] == famEd25519
	}
	return false
}

// refresh starts a fetch unless one runs or one started less than
// minRefresh ago; with wait it waits for the running fetch (at most
// fetchTimeout) and returns the newest snapshot.
func (s *jwksSet) refresh(wait bool) *jwksSnapshot {
	s.mu.Lock()
	ch := s.inflight
	if ch == nil && (s.lastAttempt.IsZero() || time.Since(s.lastAttempt) >= s.minRefresh) {
		s.lastAttempt = time.Now()
		ch = make(chan struct{})
		s.inflight = ch
		s.fetches.Add(1)
		go s.fetch(ch)
	}
	s.mu.Unlock()
	if wait && ch != nil {
		t := time.NewTimer(s.fetchTimeout)
		select {
		case <-ch:
		case <-t.C:
		}
		t.Stop()
	}
	return s.snap.Load()
}

// fetch runs one fetch; it ends within fetchTimeout.
func (s *jwksSet) fetch(done chan struct{}) {
	defer func() {
		s.mu.Lock()
		s.inflight = nil
		s.mu.Unlock()
		close(done)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), s.fetchTimeout)
	defer cancel()
	snap, err := s.get(ctx)
	s.mu.Lock()
	if err != nil {
		s.lastErr = err.Error()
	} else {
		s.lastErr = ""
	}
	s.mu.Unlock()
	if err != nil {
		logger().Warn("keygate: JWKS fetch failed; keeping the previous keys", "jwks_url", s.shown, "err", err.Error())
		return
	}
	s.snap.Store(snap)
	logger().Info("keygate: JWKS loaded", "jwks_url", s.shown, "keys", len(snap.all))
}

// failing reports why the last fetch failed, if it did. The fetch runs on
// a goroutine of its own, where there is no request to log through Kong
// with; a refused token asks this and says it through kong.log.
func (s *jwksSet) failing() (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr, s.lastErr != ""
}

func (s *jwksSet) get(ctx context.Context) (*jwksSnapshot, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, JWKSMaxBody+1))
	if err != nil {
		return nil, err
	}
	if len(body) > JWKSMaxBody {
		return nil, errors.New("JWKS document too large")
	}
	keys, err := parseJWKS(body)
	if err != nil {
		return nil, err
	}
	snap := &jwksSnapshot{byKid: map[string][]jwk{}, all: keys, fetchedAt: time.Now()}
	for _, k := range keys {
		if k.kid != "" {
			snap.byKid[k.kid] = append(snap.byKid[k.kid], k)
		}
	}
	return snap, nil
}

type rawJWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Crv string `json:"crv"`
	N   string `json:"n"`
	E   string `json:"e"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// parseJWKS reads the RSA, EC and OKP (Ed25519) signature keys of a JWKS
// document. Keys of other kinds, for encryption, or malformed are skipped;
// a document with no usable key is an error.
func parseJWKS(body []byte) ([]jwk, error) {
	var doc struct {
		Keys []rawJWK `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("JWKS is not JSON: %w", err)
	}
	var out []jwk
	for _, r := range doc.Keys {
		if len(out) == JWKSMaxKeys {
			break
		}
		if r.Use != "" && r.Use != "sig" {
			continue
		}
		if r.Alg != "" {
			if _, ok := algFamilies[r.Alg]; !ok {
				continue
			}
		}
		key, err := parseJWK(&r)
		if err != nil {
			logger().Debug("keygate: JWKS key skipped", "kid", r.Kid, "err", err.Error())
			continue
		}
		out = append(out, jwk{kid: r.Kid, alg: r.Alg, key: key})
	}
	if len(out) == 0 {
		return nil, errors.New("JWKS has no usable signature key")
	}
	return out, nil
}

func b64(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }

func parseJWK(r *rawJWK) (any, error) {
	switch r.Kty {
	case "RSA":
		n, err := b64(r.N)
		if err != nil || len(n) == 0 {
			return nil, errors.New("bad n")
		}
		e, err := b64(r.E)
		if err != nil || len(e) == 0 || len(e) > 4 {
			return nil, errors.New("bad e")
		}
		var ev int
		for _, b := range e {
			ev = ev<<8 | int(b)
		}
		if ev < 3 || ev%2 == 0 {
			return nil, errors.New("bad e")
		}
		k := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: ev}
		if k.N.BitLen() < MinRSABits {
			return nil, errors.New("RSA key too small")
		}
		return k, nil
	case "EC":
		var curve elliptic.Curve
		var size int
		switch r.Crv {
		case "P-256":
			curve, size = elliptic.P256(), 32
		case "P-384":
			curve, size = elliptic.P384(), 48
		case "P-521":
			curve, size = elliptic.P521(), 66
		default:
			return nil, errors.New("unsupported curve")
		}
		x, err1 := b64(r.X)
		y, err2 := b64(r.Y)
		if err1 != nil || err2 != nil || len(x) != size || len(y) != size {
			return nil, errors.New("bad x/y")
		}
		point := make([]byte, 0, 1+2*size)
		point = append(point, 4)
		point = append(point, x...)
		point = append(point, y...)
		// ParseUncompressedPublicKey rejects points not on the curve.
		k, err := ecdsa.ParseUncompressedPublicKey(curve, point)
		if err != nil {
			return nil, err
		}
		return k, nil
	case "OKP":
		if r.Crv != "Ed25519" {
			return nil, errors.New("unsupported OKP curve")
		}
		x, err := b64(r.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, errors.New("bad x")
		}
		return ed25519.PublicKey(x), nil
	}
	return nil, errors.New("unsupported kty")
}
