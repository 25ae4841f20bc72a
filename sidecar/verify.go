package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"time"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/internal/envelope"
	"github.com/keygate/keygate/store"
	"github.com/valyala/fasthttp"
)

// handleVerify answers POST /internal/v1/verify: 200 with the decision for
// every well-formed request; 401/4010 without the gateway secret.
func (s *Server) handleVerify(ctx *fasthttp.RequestCtx, rid string) {
	if !equalSecret(bearer(ctx), s.cfg.GatewaySecret) {
		reply(ctx, rid, envelope.Unauthorized, "", nil)
		return
	}
	var req apikey.VerifyRequest
	if err := json.Unmarshal(ctx.PostBody(), &req); err != nil {
		reply(ctx, rid, envelope.BadRequest, "body must be a verify request object", nil)
		return
	}
	r := apikey.Request{Now: time.Now().Unix(), RequiredScopes: req.RequiredScopes}
	for _, m := range req.AllowedModes {
		mode, ok := apikey.ParseMode(m)
		if !ok {
			reply(ctx, rid, envelope.BadRequest, "allowedModes entries must be LIVE or TEST", nil)
			return
		}
		r.AllowedModes |= apikey.ModesOf(mode)
	}
	if len(req.AllowedModes) == 0 {
		r.AllowedModes = apikey.ModesOf(apikey.Live)
	}
	if req.ClientIP != "" {
		ip, err := netip.ParseAddr(req.ClientIP)
		if err != nil {
			reply(ctx, rid, envelope.BadRequest, "clientIp must be an IP address", nil)
			return
		}
		r.ClientIP = ip
	}
	facts, err := s.lookup(ctx, req.Key)
	if err != nil {
		code := storeCode(err)
		s.log.Error("verify lookup failed", "requestId", rid, "err", err)
		s.metrics.countVerify(code)
		reply(ctx, rid, code, "", nil)
		return
	}
	d := apikey.Decide(facts, &r)
	var data []byte
	if d == apikey.DenyInvalid {
		data, _ = json.Marshal(apikey.VerifyDenied{DenyCode: d.Code(), CacheMs: s.cacheMs})
	} else {
		res := apikey.VerifyResult{Allow: d == apikey.Allow, DenyCode: d.Code(),
			APIKeyID: facts.APIKeyID, WorkspaceID: facts.WorkspaceID, Mode: facts.Mode.String(),
			Scopes: facts.Scopes, IPWhitelist: make([]string, len(facts.IPWhitelist)), CacheMs: s.cacheMs}
		if res.Scopes == nil {
			res.Scopes = []string{}
		}
		for i, p := range facts.IPWhitelist {
			res.IPWhitelist[i] = prefixString(p)
		}
		if facts.ExpiresAt != 0 {
			res.ExpiresAt = rfc3339(facts.ExpiresAt)
		}
		data, _ = json.Marshal(res)
	}
	if d == apikey.Allow {
		s.usage.used(facts.APIKeyID, r.Now)
		s.metrics.countVerify(envelope.OK)
	} else {
		s.metrics.countVerify(envelope.Code(d.Code()))
	}
	reply(ctx, rid, envelope.OK, "", data)
}

// lookup returns the facts of a presented key, or nil when it is malformed
// or unknown. A bad checksum never reaches the store.
func (s *Server) lookup(ctx *fasthttp.RequestCtx, key string) (*apikey.Facts, error) {
	if _, ok := apikey.ParseSecret(key); !ok {
		return nil, nil
	}
	start := time.Now()
	sc, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	f, err := s.store.Lookup(sc, apikey.Hash(key))
	s.metrics.observe("lookup", start)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	return f, err
}

// prefixString writes a whitelist entry as stored: single addresses without
// their full-length prefix.
func prefixString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

func rfc3339(unix int64) string { return time.Unix(unix, 0).UTC().Format(time.RFC3339) }
