package sidecar

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strconv"
	"time"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/internal/envelope"
	"github.com/keygate/keygate/store"
	"github.com/valyala/fasthttp"
)

// verifyParams are the request facts of a verify body other than the key.
type verifyParams struct {
	scopes   []string
	modes    apikey.Modes
	clientIP netip.Addr
}

// handleVerify answers POST /internal/v1/verify: 200 with the decision for
// every well-formed request; 401/4010 without the gateway secret.
func (s *Server) handleVerify(ctx *fasthttp.RequestCtx, rid string) {
	if !equalSecret(bearer(ctx), s.cfg.GatewaySecret) {
		reply(ctx, rid, envelope.Unauthorized, "", nil)
		return
	}
	key, params, err := s.parseVerify(ctx.PostBody())
	if err != nil {
		s.replyErr(ctx, rid, err)
		return
	}
	r := apikey.Request{Now: time.Now().Unix(), RequiredScopes: params.scopes, AllowedModes: params.modes, ClientIP: params.clientIP}
	facts, err := s.lookup(key)
	if err != nil {
		code := storeCode(err)
		s.log.Error("verify lookup failed", "requestId", rid, "err", err)
		s.metrics.countVerify(code)
		reply(ctx, rid, code, "", nil)
		return
	}
	d := apikey.Decide(facts, &r)
	if d == apikey.Allow {
		s.usage.used(facts.APIKeyID, r.Now)
		s.metrics.countVerify(envelope.OK)
	} else {
		s.metrics.countVerify(envelope.Code(d.Code()))
	}
	var buf [512]byte
	reply(ctx, rid, envelope.OK, "", appendVerifyData(buf[:0], d, facts, s.cacheMs))
}

// parseVerify reads a verify body. The plugin sends the same body after the
// key for every request of a route ({"key":"…","requiredScopes":[…],
// "allowedModes":[…]}), so that tail is parsed once and its parameters
// kept (a bounded map); anything else is decoded in full.
func (s *Server) parseVerify(body []byte) (string, *verifyParams, error) {
	const head = `{"key":"`
	if len(body) > len(head)+apikey.SecretLen && string(body[:len(head)]) == head && body[len(head)+apikey.SecretLen] == '"' {
		tail := body[len(head)+apikey.SecretLen+1:]
		s.tailsMu.RLock()
		p := s.verifyTails[string(tail)] // map index: no copy of tail
		s.tailsMu.RUnlock()
		if p != nil {
			return string(body[len(head) : len(head)+apikey.SecretLen]), p, nil
		}
	}
	var req apikey.VerifyRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return "", nil, badRequest("body must be a verify request object")
	}
	p := &verifyParams{scopes: req.RequiredScopes}
	for _, m := range req.AllowedModes {
		mode, ok := apikey.ParseMode(m)
		if !ok {
			return "", nil, badRequest("allowedModes entries must be LIVE or TEST")
		}
		p.modes |= apikey.ModesOf(mode)
	}
	if len(req.AllowedModes) == 0 {
		p.modes = apikey.ModesOf(apikey.Live)
	}
	if req.ClientIP != "" {
		ip, err := netip.ParseAddr(req.ClientIP)
		if err != nil {
			return "", nil, badRequest("clientIp must be an IP address")
		}
		p.clientIP = ip
	}
	// Remember the tail of a body shaped exactly like the plugin's: no
	// client address (it would vary per request), no second "key" field in
	// any case (the fast path must read the key a full decode reads), and
	// short.
	if len(req.Key) == apikey.SecretLen && req.ClientIP == "" {
		head := `{"key":"` + req.Key + `"`
		if len(body) > len(head) && len(body)-len(head) <= maxVerifyTailLen && string(body[:len(head)]) == head &&
			!bytes.Contains(bytes.ToLower(body[len(head):]), []byte(`"key"`)) {
			s.tailsMu.Lock()
			if len(s.verifyTails) < maxVerifyTails {
				s.verifyTails[string(body[len(head):])] = p
			}
			s.tailsMu.Unlock()
		}
	}
	return req.Key, p, nil
}

// maxVerifyTails and maxVerifyTailLen bound the remembered verify bodies:
// one per route policy in practice.
const (
	maxVerifyTails   = 1024
	maxVerifyTailLen = 1024
)

// appendVerifyData appends the data of a verify answer: the decision, and
// the key facts unless the key is not valid.
func appendVerifyData(b []byte, d apikey.Decision, f *apikey.Facts, cacheMs int) []byte {
	if d == apikey.Allow {
		b = append(b, `{"allow":true,"denyCode":""`...)
	} else {
		b = append(b, `{"allow":false,"denyCode":"`...)
		b = append(b, d.Code()...)
		b = append(b, '"')
	}
	if d != apikey.DenyInvalid {
		b = append(b, `,"apiKeyId":`...)
		b = envelope.AppendString(b, f.APIKeyID)
		b = append(b, `,"workspaceId":`...)
		b = envelope.AppendString(b, f.WorkspaceID)
		b = append(b, `,"mode":"`...)
		b = append(b, f.Mode.String()...)
		b = append(b, `","scopes":[`...)
		for i, sc := range f.Scopes {
			if i > 0 {
				b = append(b, ',')
			}
			b = envelope.AppendString(b, sc)
		}
		b = append(b, `],"ipWhitelist":[`...)
		for i, p := range f.IPWhitelist {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '"')
			if p.IsSingleIP() {
				b = p.Addr().AppendTo(b)
			} else {
				b = p.AppendTo(b)
			}
			b = append(b, '"')
		}
		b = append(b, ']')
		if f.ExpiresAt != 0 {
			b = append(b, `,"expiresAt":"`...)
			b = time.Unix(f.ExpiresAt, 0).UTC().AppendFormat(b, time.RFC3339)
			b = append(b, '"')
		}
	}
	b = append(b, `,"cacheMs":`...)
	b = strconv.AppendInt(b, int64(cacheMs), 10)
	return append(b, '}')
}

// lookup returns the facts of a presented key, or nil when it is malformed
// or unknown. A bad checksum never reaches the store. The store call has no
// deadline of ours: a cache hit needs none, bbolt reads do not block, and
// the PostgreSQL store bounds calls without one itself.
func (s *Server) lookup(key string) (*apikey.Facts, error) {
	if _, ok := apikey.ParseSecret(key); !ok {
		return nil, nil
	}
	start := time.Now()
	f, err := s.store.Lookup(context.Background(), apikey.Hash(key))
	s.metrics.observe("lookup", start)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	return f, err
}

func rfc3339(unix int64) string { return time.Unix(unix, 0).UTC().Format(time.RFC3339) }
