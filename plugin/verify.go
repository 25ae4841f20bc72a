package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/internal/envelope"
	"github.com/valyala/fasthttp"
)

// verifier asks the key service about one secret. It returns the key's
// facts, nil facts for a key the service does not accept (4012), or an
// error: errUnavailable or errTimeout.
type verifier interface {
	// bearer is the Authorization value: "Bearer <gateway secret>".
	// requestID is passed on for log correlation.
	verify(key, requestID string, tail, bearer []byte, timeout time.Duration) (*apikey.Facts, time.Duration, error)
}

var (
	errUnavailable = errors.New("key service unavailable")
	errTimeout     = errors.New("key service timeout")
)

// MaxVerifyAnswer caps the sidecar's verify answer.
const MaxVerifyAnswer = 64 << 10

// sidecarClient calls the sidecar's verify API over keep-alive connections.
type sidecarClient struct {
	hc   *fasthttp.HostClient
	host string // Host header / request URI host
}

var sidecarRegistry sync.Map // sidecar_url+"|"+sidecar_ca_file → *sidecarClient

// sidecarFor returns the shared client of one sidecar endpoint: every
// instance naming the same sidecar (and CA file) shares its connection
// pool, and no goroutine outlives its connections (fasthttp's cleaner stops
// when the pool is empty).
func sidecarFor(rawURL, caFile string, ep *sidecarEndpoint) *sidecarClient {
	k := rawURL + "|" + caFile
	if c, ok := sidecarRegistry.Load(k); ok {
		return c.(*sidecarClient)
	}
	c, _ := sidecarRegistry.LoadOrStore(k, newSidecarClient(ep))
	return c.(*sidecarClient)
}

// newSidecarClient is the verify client of ep: every connection is opened
// by ep.dial, so it is TLS whenever the endpoint is https.
func newSidecarClient(ep *sidecarEndpoint) *sidecarClient {
	hc := &fasthttp.HostClient{
		Addr:                          ep.addr,
		Name:                          "keygate-plugin",
		MaxConns:                      1024,
		MaxIdleConnDuration:           30 * time.Second,
		MaxResponseBodySize:           MaxVerifyAnswer,
		MaxIdemponentCallAttempts:     2,
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: true,
		// Verify reads only: one retry on a broken keep-alive connection is
		// safe; never after a timeout (the deadline is spent).
		RetryIfErr: func(_ *fasthttp.Request, attempts int, err error) (bool, bool) {
			return false, attempts < 2 && !isTimeout(err)
		},
		DialTimeout: func(_ string, timeout time.Duration) (net.Conn, error) { return ep.dialTimeout(timeout) },
	}
	return &sidecarClient{hc: hc, host: ep.host}
}

func isTimeout(err error) bool {
	if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrDialTimeout) {
		return true
	}
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

// verifyTail is the verify body after the key: the route's scopes and modes.
// No clientIp: the plugin asks Kong for the IP only when the key has a
// whitelist, and evaluates it itself (docs/CONTRACT.md §9.3).
func verifyTail(scopes, modes []string) []byte {
	b := []byte(`","requiredScopes":[`)
	for i, s := range scopes {
		if i > 0 {
			b = append(b, ',')
		}
		b = envelope.AppendString(b, s)
	}
	b = append(b, `],"allowedModes":[`...)
	for i, m := range modes {
		if i > 0 {
			b = append(b, ',')
		}
		b = envelope.AppendString(b, m)
	}
	return append(b, "]}"...)
}

type verifyAnswer struct {
	Success bool                 `json:"success"`
	Code    envelope.Code        `json:"code"`
	Data    *apikey.VerifyResult `json:"data"`
}

// verify asks the sidecar about key and returns its facts (nil: not a valid
// key) and how long the answer may be cached (0: as configured).
func (c *sidecarClient) verify(key, requestID string, tail, bearer []byte, timeout time.Duration) (*apikey.Facts, time.Duration, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)

	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI(apikey.VerifyPath)
	req.Header.SetHost(c.host)
	req.Header.SetContentType("application/json")
	req.Header.SetBytesKV(authorizationKey, bearer)
	req.Header.Set("X-Request-Id", requestID)
	body := req.BodyWriter()
	_, _ = body.Write([]byte(`{"key":"`))
	_, _ = body.Write([]byte(key)) // format-checked: base62 and '_', nothing to escape
	_, _ = body.Write(tail)

	if err := c.hc.DoTimeout(req, resp, timeout); err != nil {
		if isTimeout(err) {
			return nil, 0, errTimeout
		}
		return nil, 0, fmt.Errorf("%w: %v", errUnavailable, err)
	}
	status := resp.StatusCode()
	if status == fasthttp.StatusUnauthorized {
		return nil, 0, fmt.Errorf("%w: the sidecar refused the gateway secret (401): the plugin and the sidecar must share it", errUnavailable)
	}
	if status != fasthttp.StatusOK {
		return nil, 0, fmt.Errorf("%w: sidecar answered status %d", errUnavailable, status)
	}
	return parseVerifyAnswer(resp.Body())
}

// parseVerifyAnswer reads the body of a 200 verify answer: the key's facts
// (nil: not a valid key) and how long they may be cached (0: as configured).
func parseVerifyAnswer(body []byte) (*apikey.Facts, time.Duration, error) {
	var ans verifyAnswer
	if err := json.Unmarshal(body, &ans); err != nil || !ans.Success || ans.Code != envelope.OK || ans.Data == nil {
		return nil, 0, fmt.Errorf("%w: sidecar answer is not a verify envelope", errUnavailable)
	}
	f, err := factsOf(ans.Data)
	return f, time.Duration(ans.Data.CacheMs) * time.Millisecond, err
}

var authorizationKey = []byte("Authorization")

// factsOf turns a verify answer into key facts, checking them: an answer
// that does not make sense is the service's failure, never an allow.
func factsOf(r *apikey.VerifyResult) (*apikey.Facts, error) {
	bad := func(what string) error {
		return fmt.Errorf("%w: sidecar verify answer: %s", errUnavailable, what)
	}
	d, ok := envelope.DecisionOf(r.DenyCode)
	if !ok {
		return nil, bad("unknown denyCode")
	}
	if r.Allow != (d == apikey.Allow) {
		return nil, bad("allow and denyCode disagree")
	}
	if d == apikey.DenyInvalid {
		return nil, nil
	}
	if !apikey.ValidID(r.APIKeyID) {
		return nil, bad("bad apiKeyId")
	}
	if r.WorkspaceID == "" {
		return nil, bad("no workspaceId")
	}
	mode, ok := apikey.ParseMode(r.Mode)
	if !ok {
		return nil, bad("bad mode")
	}
	var wl []netip.Prefix
	if len(r.IPWhitelist) > 0 {
		var err error
		if wl, err = apikey.ParseCanonical(r.IPWhitelist); err != nil {
			return nil, bad("bad ipWhitelist")
		}
	}
	var exp int64
	if r.ExpiresAt != "" {
		t, err := time.Parse(time.RFC3339, r.ExpiresAt)
		if err != nil {
			return nil, bad("bad expiresAt")
		}
		exp = t.Unix()
	}
	return &apikey.Facts{
		APIKeyID:    r.APIKeyID,
		WorkspaceID: r.WorkspaceID,
		Mode:        mode,
		ExpiresAt:   exp,
		Scopes:      r.Scopes,
		IPWhitelist: wl,
	}, nil
}
