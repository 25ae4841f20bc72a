package sidecar

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
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
	now := ctx.Time() // read by fasthttp when the request arrived: no clock read of ours
	if !equalSecret(bearer(ctx), s.cfg.GatewaySecret) {
		replyAt(ctx, now, rid, envelope.Unauthorized, "", nil)
		return
	}
	key, params, err := s.parseVerify(ctx.PostBody())
	if err != nil {
		s.replyErr(ctx, rid, err)
		return
	}
	r := apikey.Request{Now: now.Unix(), RequiredScopes: params.scopes, AllowedModes: params.modes, ClientIP: params.clientIP}
	e, err := s.lookup(key)
	if err != nil {
		code := storeCode(err)
		s.log.Error("verify lookup failed", "requestId", rid, "err", err)
		s.metrics.countVerify(code)
		replyAt(ctx, now, rid, code, "", nil)
		return
	}
	var facts *apikey.Facts
	if e != nil {
		facts = &e.facts
	}
	d := apikey.Decide(facts, &r)
	if d == apikey.Allow {
		s.usage.used(e, r.Now)
		s.metrics.countVerify(envelope.OK)
	} else {
		s.metrics.countVerify(envelope.DenyCode(d))
	}
	var factsJSON string
	if d != apikey.DenyInvalid {
		factsJSON = e.rendered
	}
	var buf [512]byte
	replyAt(ctx, now, rid, envelope.OK, "", appendVerifyData(buf[:0], d, factsJSON, s.cacheMs))
}

// parseVerify reads a verify body. The plugin sends the same body after the
// key for every request of a route ({"key":"…","requiredScopes":[…],
// "allowedModes":[…]}), and a caller that wants the sidecar to check the
// client address sends "clientIp" right after the key; so what follows those
// (the tail) is decoded once and its parameters kept (a bounded map), and
// anything else is decoded in full.
func (s *Server) parseVerify(body []byte) ([]byte, verifyParams, error) {
	if key, ip, tail, ok := splitVerify(body); ok {
		var p *verifyParams
		if tails := s.verifyTails.Load(); tails != nil {
			p = (*tails)[string(tail)] // map index: no copy of tail
		}
		if p != nil {
			v := *p
			if len(ip) > 0 {
				addr, err := parseAddr(ip)
				if err != nil {
					return nil, verifyParams{}, badRequest("clientIp must be an IP address")
				}
				v.clientIP = addr
			}
			return key, v, nil
		}
	}
	var req apikey.VerifyRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, verifyParams{}, badRequest("body must be a verify request object")
	}
	p := verifyParams{scopes: req.RequiredScopes}
	for _, m := range req.AllowedModes {
		mode, ok := apikey.ParseMode(m)
		if !ok {
			return nil, verifyParams{}, badRequest("allowedModes entries must be LIVE or TEST")
		}
		p.modes |= apikey.ModesOf(mode)
	}
	if len(req.AllowedModes) == 0 {
		p.modes = apikey.ModesOf(apikey.Live)
	}
	if req.ClientIP != "" {
		ip, err := netip.ParseAddr(req.ClientIP)
		if err != nil {
			return nil, verifyParams{}, badRequest("clientIp must be an IP address")
		}
		p.clientIP = ip
	}
	// Remember the tail of a body of the fast path's shape when the full
	// decode read the same key and address the split did, and the tail
	// can set neither: it names no "key" or "clientIp" member in any case,
	// and is short, printable ASCII without escapes (so no escaped or
	// case-folded member name can hide in it).
	if key, ip, tail, ok := splitVerify(body); ok && string(key) == req.Key && string(ip) == req.ClientIP && rememberable(tail) {
		kept := p
		kept.clientIP = netip.Addr{}
		s.tailsMu.Lock()
		var old map[string]*verifyParams
		if t := s.verifyTails.Load(); t != nil {
			old = *t
		}
		if _, seen := old[string(tail)]; !seen && len(old) < maxVerifyTails {
			m := make(map[string]*verifyParams, len(old)+1)
			maps.Copy(m, old)
			m[string(tail)] = &kept
			s.verifyTails.Store(&m)
		}
		s.tailsMu.Unlock()
	}
	return []byte(req.Key), p, nil
}

// parseAddr is netip.ParseAddr of b, without copying b to a string for a
// plain IPv4 address (the common case); anything else goes to ParseAddr.
func parseAddr(b []byte) (netip.Addr, error) {
	var a [4]byte
	field, digits, n := 0, 0, 0
	for i, c := range b {
		switch {
		case '0' <= c && c <= '9' && digits < 3 && !(digits == 1 && n == 0):
			n = n*10 + int(c-'0')
			digits++
		case c == '.' && digits > 0 && field < 3 && i+1 < len(b):
			if n > 255 {
				return netip.ParseAddr(string(b))
			}
			a[field] = byte(n)
			field, digits, n = field+1, 0, 0
		default:
			return netip.ParseAddr(string(b))
		}
	}
	if field != 3 || digits == 0 || n > 255 {
		return netip.ParseAddr(string(b))
	}
	a[3] = byte(n)
	return netip.AddrFrom4(a), nil
}

// splitVerify splits a body of the form {"key":"KEY"[,"clientIp":"IP"]TAIL
// where KEY is apikey.SecretLen letters, digits and underscores, and IP is
// short printable ASCII without an escape: strings whose JSON form is
// their bytes. It checks the form only; the caller decides whether TAIL is
// known.
func splitVerify(body []byte) (key, ip, tail []byte, ok bool) {
	const head, ipField = `{"key":"`, `,"clientIp":"`
	if len(body) <= len(head)+apikey.SecretLen || string(body[:len(head)]) != head || body[len(head)+apikey.SecretLen] != '"' {
		return nil, nil, nil, false
	}
	key = body[len(head) : len(head)+apikey.SecretLen]
	for _, c := range key {
		if !keyChar[c] {
			return nil, nil, nil, false
		}
	}
	rest := body[len(head)+apikey.SecretLen+1:]
	if len(rest) > len(ipField) && string(rest[:len(ipField)]) == ipField {
		rest = rest[len(ipField):]
		end := bytes.IndexByte(rest, '"')
		if end < 1 || end > maxClientIPLen || !plainASCII(rest[:end]) {
			return nil, nil, nil, false
		}
		ip, rest = rest[:end], rest[end+1:]
	}
	return key, ip, rest, true
}

// keyChar: the bytes a key is made of (letters, digits, underscore).
var keyChar = func() (t [256]bool) {
	for c := range t {
		t[c] = '0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || c == '_'
	}
	return t
}()

// plainASCII reports whether b is printable ASCII without a backslash.
func plainASCII(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c >= 0x7f || c == '\\' {
			return false
		}
	}
	return true
}

// rememberable reports whether a verify body's tail may be kept for the
// fast path (see parseVerify).
func rememberable(tail []byte) bool {
	if len(tail) == 0 || len(tail) > maxVerifyTailLen || !plainASCII(tail) {
		return false
	}
	lower := bytes.ToLower(tail)
	return !bytes.Contains(lower, []byte(`"key"`)) && !bytes.Contains(lower, []byte(`"clientip"`))
}

// maxVerifyTails and maxVerifyTailLen bound the remembered verify bodies:
// one per route policy in practice.
// maxClientIPLen bounds the address the fast path reads (an IPv6 address
// with a zone).
const (
	maxVerifyTails   = 1024
	maxVerifyTailLen = 1024
	maxClientIPLen   = 64
)

// appendVerifyData appends the data of a verify answer: the decision, the
// key's facts as appendFacts wrote them (none when the key is not valid)
// and cacheMs.
func appendVerifyData(b []byte, d apikey.Decision, factsJSON string, cacheMs int) []byte {
	if d == apikey.Allow {
		b = append(b, `{"allow":true,"denyCode":""`...)
	} else {
		b = append(b, `{"allow":false,"denyCode":"`...)
		b = append(b, envelope.DenyCode(d)...)
		b = append(b, '"')
	}
	b = append(b, factsJSON...)
	b = append(b, `,"cacheMs":`...)
	b = strconv.AppendInt(b, int64(cacheMs), 10)
	return append(b, '}')
}

// appendFacts appends the facts members of a verify answer (each preceded
// by a comma); the verify cache renders them once, when it reads a key from
// the store (newEntry), so a hit does not write them again.
func appendFacts(b []byte, f *apikey.Facts) []byte {
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
	return b
}

// lookup returns the cache entry of a presented key, or nil when it is
// malformed or unknown. A bad checksum never reaches the store. The store
// call has no deadline of ours: a cache hit needs none, bbolt reads do not
// block, and the PostgreSQL store bounds calls without one itself.
func (s *Server) lookup(key []byte) (*entry, error) {
	if _, ok := apikey.ParseSecret(key); !ok {
		return nil, nil
	}
	e, err := s.cache.find(context.Background(), apikey.Hash(key))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	return e, err
}

func rfc3339(unix int64) string { return time.Unix(unix, 0).UTC().Format(time.RFC3339) }
