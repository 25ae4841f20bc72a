package sidecar

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/internal/envelope"
	"github.com/keygate/keygate/internal/identity"
	"github.com/keygate/keygate/store"
	"github.com/valyala/fasthttp"
)

// caller is who a management request acts for.
type caller struct {
	actor         store.Actor
	allowTestMode bool
}

// handleManage serves /web/v1/workspaces/{ws}/api-keys[...] and
// /web/v1/workspaces/{ws}/api-key-events. rest is the path after
// /web/v1/workspaces/.
func (s *Server) handleManage(ctx *fasthttp.RequestCtx, rid, rest string) envelope.Code {
	manageHeaders(ctx)
	ws, tail, _ := strings.Cut(rest, "/")
	parts := strings.Split(tail, "/")
	var route string
	var id string
	switch {
	case len(parts) == 1 && parts[0] == "api-keys":
		route = "keys"
	case len(parts) == 2 && parts[0] == "api-keys" && parts[1] != "":
		route, id = "key", parts[1]
	case len(parts) == 3 && parts[0] == "api-keys" && parts[2] == "roll":
		route, id = "roll", parts[1]
	case len(parts) == 1 && parts[0] == "api-key-events":
		route = "events"
	default:
		reply(ctx, rid, envelope.NotFound, "Not found", nil)
		return envelope.NotFound
	}
	method := string(ctx.Method())
	allow := map[string]string{"keys": "GET, POST", "key": "GET, DELETE", "roll": "POST", "events": "GET"}[route]
	if !allowed(allow, method) {
		return methodNotAllowed(ctx, rid, allow)
	}
	if !apikey.ValidWorkspaceID(ws) {
		// Authenticate first so the shape of paths leaks nothing.
		if _, err := s.authenticate(ctx, ws); err != nil {
			return s.replyErr(ctx, rid, err)
		}
		return s.replyErr(ctx, rid, badRequest("workspaceId must be 1-64 characters of A-Z a-z 0-9 . _ -"))
	}
	// Store calls get their own deadline rather than the request's context:
	// fasthttp cancels that one as soon as a shutdown starts, and a drain
	// must let in-flight writes finish.
	sc, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	who, err := s.authenticate(ctx, ws)
	if err != nil {
		var ee *envelope.Error
		if errors.As(err, &ee) && ee.Code == envelope.NotOwner {
			s.recordDenied(sc, rid, ws, who, ee.Code)
		}
		return s.replyErr(ctx, rid, err)
	}
	if id != "" && !apikey.ValidID(id) {
		reply(ctx, rid, envelope.NotFound, "", nil)
		return envelope.NotFound
	}
	var code envelope.Code
	switch {
	case route == "keys" && method == "POST":
		code, err = s.create(ctx, sc, rid, ws, who)
	case route == "keys":
		code, err = s.list(ctx, sc, rid, ws)
	case route == "key" && method == "GET":
		code, err = s.get(ctx, sc, rid, ws, id)
	case route == "key":
		code, err = s.revoke(ctx, sc, rid, ws, id, who)
	case route == "roll":
		code, err = s.roll(ctx, sc, rid, ws, id, who)
	case route == "events":
		code, err = s.events(ctx, sc, rid, ws)
	}
	if err != nil {
		code = s.replyErr(ctx, rid, err)
	}
	return code
}

// manageHeaders marks a management answer: every one, list, get and
// errors included, describes a workspace's keys, so no cache (a browser's
// or a proxy's) keeps it and no browser guesses its type (docs/SECURITY.md).
func manageHeaders(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.Response.Header.Set("X-Content-Type-Options", "nosniff")
}

// isManagePath reports whether the request is on the management API.
func isManagePath(ctx *fasthttp.RequestCtx) bool {
	return bytes.HasPrefix(ctx.Request.URI().PathOriginal(), []byte(managePrefix))
}

const managePrefix = "/web/v1/"

func allowed(allow, method string) bool {
	for _, m := range strings.Split(allow, ", ") {
		if m == method {
			return true
		}
	}
	return false
}

// authenticate checks the identity assertion or the admin token. On 4030 it
// still returns the caller, for the audit trail.
func (s *Server) authenticate(ctx *fasthttp.RequestCtx, ws string) (caller, error) {
	if tok := ctx.Request.Header.Peek(identity.Header); len(tok) > 0 {
		now := time.Now()
		c, err := identity.Verify(s.cfg.GatewaySecret, string(tok), now)
		if err != nil || c.Path != string(ctx.Request.URI().PathOriginal()) || c.Method != string(ctx.Method()) {
			return caller{}, envelope.Errorf(envelope.Unauthorized, "")
		}
		// Each assertion is accepted once: the same create sent twice
		// makes one key (docs/SECURITY.md).
		switch s.seen.first(c.ID, c.ExpiresAt+int64(identity.Leeway/time.Second), now) {
		case seenReplay:
			s.log.Warn("identity assertion replayed; refused", "requestId", string(ctx.Request.Header.Peek("X-Request-Id")), "assertionRequestId", c.RequestID)
			return caller{}, envelope.Errorf(envelope.Unauthorized, "")
		case seenFull:
			s.log.Error("too many live identity assertions remembered; refusing management requests until some expire", "max", s.cfg.MaxAssertions)
			return caller{}, envelope.Errorf(envelope.Unavailable, "")
		}
		who := caller{actor: store.Actor{Sub: c.Subject, Portal: c.Portal}, allowTestMode: c.AllowTestMode}
		if c.Role != identity.RoleOwner || c.WorkspaceID != ws {
			return who, envelope.Errorf(envelope.NotOwner, "")
		}
		return who, nil
	}
	if equalSecret(bearer(ctx), s.cfg.AdminToken) {
		return caller{actor: store.Actor{Admin: true}, allowTestMode: true}, nil
	}
	return caller{}, envelope.Errorf(envelope.Unauthorized, "")
}

func (s *Server) newEvent(action, rid string, who caller) store.Event {
	return store.Event{EventID: newEventID(), Action: action, Actor: who.actor, RequestID: rid}
}

func newEventID() string { return "evt_" + apikey.NewID(apikey.Live)[len("sk_live_"):] }

func (s *Server) recordDenied(sc context.Context, rid, ws string, who caller, code envelope.Code) {
	ev := s.newEvent(store.ActionDenied, rid, who)
	ev.WorkspaceID, ev.Code = ws, string(code)
	err := s.store.Record(sc, ev)
	if err != nil {
		s.log.Warn("audit: denied attempt not recorded", "requestId", rid, "err", err)
	}
}

// requireJSON checks the body's media type.
func requireJSON(ctx *fasthttp.RequestCtx) error {
	ct := ctx.Request.Header.ContentType()
	mt, _, _ := bytes.Cut(ct, []byte(";"))
	if !strings.EqualFold(string(bytes.TrimSpace(mt)), "application/json") {
		return envelope.Errorf(envelope.UnsupportedMedia, "")
	}
	return nil
}

// keyJSON is the key object of every response.
type keyJSON struct {
	APIKeyID    string   `json:"apiKeyId"`
	Secret      string   `json:"secret,omitempty"`
	Name        string   `json:"name"`
	Status      string   `json:"status"`
	Mode        string   `json:"mode"`
	Scopes      []string `json:"scopes"`
	IPWhitelist []string `json:"ipWhitelist"`
	CreatedAt   string   `json:"createdAt"`
	ExpiresAt   string   `json:"expiresAt,omitempty"`
	RevokedAt   string   `json:"revokedAt,omitempty"`
	LastUsedAt  *string  `json:"lastUsedAt"`
	SecretHint  string   `json:"secretHint"`
}

func toJSON(k *store.Key, now int64) keyJSON {
	o := keyJSON{
		APIKeyID: k.ID, Name: k.Name, Status: k.Status(now), Mode: k.Mode.String(),
		Scopes: k.Scopes, IPWhitelist: k.IPWhitelist, CreatedAt: rfc3339(k.CreatedAt), SecretHint: k.SecretHint,
	}
	if o.Scopes == nil {
		o.Scopes = []string{}
	}
	if o.IPWhitelist == nil {
		o.IPWhitelist = []string{}
	}
	if k.ExpiresAt != 0 {
		o.ExpiresAt = rfc3339(k.ExpiresAt)
	}
	if k.RevokedAt != 0 {
		o.RevokedAt = rfc3339(k.RevokedAt)
	}
	if k.LastUsedAt != 0 {
		t := rfc3339(k.LastUsedAt)
		o.LastUsedAt = &t
	}
	return o
}

func replyData(ctx *fasthttp.RequestCtx, rid string, status int, v any) (envelope.Code, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	reply(ctx, rid, envelope.OK, "", data)
	ctx.SetStatusCode(status)
	return envelope.OK, nil
}

func (s *Server) create(ctx *fasthttp.RequestCtx, sc context.Context, rid, ws string, who caller) (envelope.Code, error) {
	if err := requireJSON(ctx); err != nil {
		return "", err
	}
	now := time.Now()
	req, err := decodeCreate(ctx.PostBody(), s.cfg.Scopes, now)
	if err != nil {
		return "", err
	}
	if req.Mode == apikey.Test && !who.allowTestMode {
		s.recordDenied(sc, rid, ws, who, envelope.TestModePortal)
		return "", envelope.Errorf(envelope.TestModePortal, "")
	}
	for attempt := 0; ; attempt++ {
		secret := apikey.NewSecret(req.Mode)
		k := &store.Key{
			ID: apikey.NewID(req.Mode), WorkspaceID: ws, Name: req.Name, Mode: req.Mode,
			Scopes: req.Scopes, IPWhitelist: req.IPWhitelist, CreatedAt: now.Unix(),
			ExpiresAt: req.ExpiresAt, SecretHint: apikey.Hint(secret.Reveal()),
		}
		err := s.store.Create(sc, k, apikey.Hash(secret.Reveal()), s.newEvent(store.ActionCreated, rid, who))
		if errors.Is(err, store.ErrConflict) && attempt < 3 {
			continue
		}
		if err != nil {
			return "", err
		}
		o := toJSON(k, now.Unix())
		o.Secret = secret.Reveal()
		return replyData(ctx, rid, 201, o) // Cache-Control: no-store, set by handleManage
	}
}

func (s *Server) get(ctx *fasthttp.RequestCtx, sc context.Context, rid, ws, id string) (envelope.Code, error) {
	k, err := s.store.Get(sc, ws, id)
	if err != nil {
		return "", err
	}
	return replyData(ctx, rid, 200, toJSON(k, time.Now().Unix()))
}

func (s *Server) revoke(ctx *fasthttp.RequestCtx, sc context.Context, rid, ws, id string, who caller) (envelope.Code, error) {
	now := time.Now().Unix()
	k, err := s.store.Revoke(sc, ws, id, now, s.newEvent(store.ActionRevoked, rid, who))
	// Pushed before the answer, failed or not (a failure may have
	// committed): when the caller sees 200, every live stream has it queued.
	s.push.key(id)
	if err != nil {
		return "", err
	}
	return replyData(ctx, rid, 200, toJSON(k, now))
}

func (s *Server) roll(ctx *fasthttp.RequestCtx, sc context.Context, rid, ws, id string, who caller) (envelope.Code, error) {
	body := ctx.PostBody()
	if len(bytes.TrimSpace(body)) > 0 {
		if err := requireJSON(ctx); err != nil {
			return "", err
		}
	}
	window, err := decodeRoll(body)
	if err != nil {
		return "", err
	}
	now := time.Now().Unix()
	cur, err := s.store.Get(sc, ws, id)
	if err != nil {
		return "", err
	}
	if cur.Status(now) == "EXPIRED" {
		return "", badRequest("apiKeyId %s is expired and cannot be rolled", id)
	}
	secret := apikey.NewSecret(cur.Mode)
	k, err := s.store.Roll(sc, ws, id, apikey.Hash(secret.Reveal()), apikey.Hint(secret.Reveal()), now, now+window,
		s.newEvent(store.ActionRolled, rid, who))
	s.push.key(id) // facts of the key change: its secrets
	if err == nil && window > 0 {
		s.push.watchExpiry(id, now+window) // the old secret's window ends
	}
	if errors.Is(err, store.ErrRevoked) {
		return "", badRequest("apiKeyId %s is revoked and cannot be rolled", id)
	}
	if err != nil {
		return "", err
	}
	o := toJSON(k, now)
	o.Secret = secret.Reveal()
	return replyData(ctx, rid, 201, o) // Cache-Control: no-store, set by handleManage
}

// page reads limit (1-100, default 20) and cursor from the query.
func page(ctx *fasthttp.RequestCtx) (store.Page, error) {
	p := store.Page{Limit: 20}
	args := ctx.QueryArgs()
	if v := args.Peek("limit"); v != nil {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 1 || n > 100 {
			return p, badRequest("limit must be an integer from 1 to 100")
		}
		p.Limit = n
	}
	p.Cursor = string(args.Peek("cursor"))
	return p, nil
}

type pageJSON[T any] struct {
	Items      []T     `json:"items"`
	NextCursor *string `json:"nextCursor"`
}

func cursorJSON(next string) *string {
	if next == "" {
		return nil
	}
	return &next
}

func (s *Server) list(ctx *fasthttp.RequestCtx, sc context.Context, rid, ws string) (envelope.Code, error) {
	p, err := page(ctx)
	if err != nil {
		return "", err
	}
	keys, next, err := s.store.List(sc, ws, p)
	if errors.Is(err, store.ErrCursor) {
		return "", badRequest("cursor is not valid")
	}
	if err != nil {
		return "", err
	}
	now := time.Now().Unix()
	out := pageJSON[keyJSON]{Items: make([]keyJSON, 0, len(keys)), NextCursor: cursorJSON(next)}
	for _, k := range keys {
		out.Items = append(out.Items, toJSON(k, now))
	}
	return replyData(ctx, rid, 200, out)
}

type eventJSON struct {
	EventID     string          `json:"eventId"`
	WorkspaceID string          `json:"workspaceId"`
	APIKeyID    *string         `json:"apiKeyId"`
	Action      string          `json:"action"`
	Code        string          `json:"code,omitempty"`
	Actor       json.RawMessage `json:"actor"`
	RequestID   string          `json:"requestId"`
	At          string          `json:"at"`
}

func (s *Server) events(ctx *fasthttp.RequestCtx, sc context.Context, rid, ws string) (envelope.Code, error) {
	p, err := page(ctx)
	if err != nil {
		return "", err
	}
	keyID := string(ctx.QueryArgs().Peek("apiKeyId"))
	if keyID != "" && !apikey.ValidID(keyID) {
		return "", badRequest("apiKeyId is not a valid key id")
	}
	if keyID != "" {
		// The key must be this workspace's: another's is "not found", and
		// even its paging must not tell that it exists.
		if _, err := s.store.Get(sc, ws, keyID); err != nil {
			return "", err
		}
	}
	evs, next, err := s.store.Events(sc, ws, keyID, p)
	if errors.Is(err, store.ErrCursor) {
		return "", badRequest("cursor is not valid")
	}
	if err != nil {
		return "", err
	}
	out := pageJSON[eventJSON]{Items: make([]eventJSON, 0, len(evs)), NextCursor: cursorJSON(next)}
	for _, e := range evs {
		actor := json.RawMessage(`{"admin":true}`)
		if !e.Actor.Admin {
			actor, _ = json.Marshal(map[string]string{"sub": e.Actor.Sub, "portal": e.Actor.Portal})
		}
		var keyID *string
		if e.APIKeyID != "" {
			keyID = &e.APIKeyID
		}
		out.Items = append(out.Items, eventJSON{EventID: e.EventID, WorkspaceID: e.WorkspaceID, APIKeyID: keyID,
			Action: e.Action, Code: e.Code, Actor: actor, RequestID: e.RequestID, At: rfc3339(e.At)})
	}
	return replyData(ctx, rid, 200, out)
}
