// Package store stores workspace API keys and their audit trail.
//
// The Store interface is what the sidecar needs of a backend: Bolt is the
// embedded default (one bbolt file), Postgres the backend several sidecars
// share. storetest.Exercise is the conformance suite every backend must
// pass.
//
// Invariants:
//   - Only SHA-256 hashes of secrets are stored; a secret never reaches this
//     package.
//   - A write is acknowledged (returns nil) only after it is durable (bbolt
//     fsyncs on commit), and the audit event of a change is written in the
//     same transaction as the change.
//   - A failed write stores nothing.
//
// This package stores keys and knows nothing of HTTP or of the API's codes:
// caching verify answers, metering and serving are the sidecar's.
package store

import (
	"context"
	"encoding/base64"
	"errors"
	"net/netip"

	"github.com/keygate/keygate/internal/apikey"
)

// Errors of every backend.
var (
	ErrNotFound = errors.New("store: not found")
	ErrClosed   = errors.New("store: closed")
	ErrFull     = errors.New("store: no space left")
	ErrConflict = errors.New("store: id already exists")
	ErrRevoked  = errors.New("store: key is revoked")
	ErrCursor   = errors.New("store: bad cursor")
	// ErrUnavailable: the backend cannot be reached right now (a database
	// server down or unreachable); the caller may retry later.
	ErrUnavailable = errors.New("store: unavailable")
)

// Key is one stored key, without its secret.
type Key struct {
	ID          string      `json:"id"`
	WorkspaceID string      `json:"ws"`
	Name        string      `json:"name"`
	Mode        apikey.Mode `json:"mode"`
	Scopes      []string    `json:"scopes"`
	IPWhitelist []string    `json:"ips"`
	CreatedAt   int64       `json:"created"`           // Unix seconds
	ExpiresAt   int64       `json:"expires,omitempty"` // 0: never
	RevokedAt   int64       `json:"revoked,omitempty"` // 0: not revoked
	LastUsedAt  int64       `json:"-"`                 // 0: never; bbolt keeps it apart (bucket used)
	SecretHint  string      `json:"hint"`
	// Secrets are the hashes that open this key: the current one (Until 0)
	// and rolled-out ones still in their window.
	Secrets []SecretRef `json:"secrets"`
}

// SecretRef is one secret of a key, by hash.
type SecretRef struct {
	Hash  SecretHash `json:"h"`
	Until int64      `json:"u,omitempty"` // Unix seconds; 0 = current
}

// SecretHash is the SHA-256 of a secret, stored in JSON as base64.
type SecretHash [32]byte

// MarshalText implements encoding.TextMarshaler.
func (h SecretHash) MarshalText() ([]byte, error) {
	return base64.StdEncoding.AppendEncode(nil, h[:]), nil
}

// UnmarshalText implements encoding.TextUnmarshaler: base64 of 32 bytes.
func (h *SecretHash) UnmarshalText(b []byte) error {
	d, err := base64.StdEncoding.AppendDecode(nil, b)
	if err == nil && len(d) != len(h) {
		err = errors.New("store: secret hash is not 32 bytes")
	}
	if err != nil {
		return err
	}
	copy(h[:], d)
	return nil
}

// Status is the key's status at now (Unix seconds).
func (k *Key) Status(now int64) string {
	switch {
	case k.RevokedAt != 0:
		return "REVOKED"
	case k.ExpiresAt != 0 && now >= k.ExpiresAt:
		return "EXPIRED"
	}
	return "ACTIVE"
}

// Facts returns the decision facts of the key for a secret valid until
// validUntil (0: as long as the key).
func (k *Key) Facts(validUntil int64) (*apikey.Facts, error) {
	p, err := apikey.ParseCanonical(k.IPWhitelist)
	if err != nil {
		return nil, err
	}
	exp := k.ExpiresAt
	if validUntil != 0 && (exp == 0 || validUntil < exp) {
		exp = validUntil
	}
	if len(p) == 0 {
		p = []netip.Prefix(nil)
	}
	return &apikey.Facts{
		APIKeyID:    k.ID,
		WorkspaceID: k.WorkspaceID,
		Mode:        k.Mode,
		Revoked:     k.RevokedAt != 0,
		ExpiresAt:   exp,
		Scopes:      k.Scopes,
		IPWhitelist: p,
	}, nil
}

// Audit actions.
const (
	ActionCreated = "CREATED"
	ActionRolled  = "ROLLED"
	ActionRevoked = "REVOKED"
	ActionDenied  = "DENIED"
)

// Actor is who did a management action.
type Actor struct {
	Sub    string `json:"sub,omitempty"`
	Portal string `json:"portal,omitempty"`
	Admin  bool   `json:"admin,omitempty"`
}

// Event is one audit event. It never holds a secret.
type Event struct {
	EventID     string `json:"eventId"`
	WorkspaceID string `json:"workspaceId"`
	APIKeyID    string `json:"apiKeyId,omitempty"`
	Action      string `json:"action"`
	Code        string `json:"code,omitempty"` // DENIED only
	Actor       Actor  `json:"actor"`
	RequestID   string `json:"requestId,omitempty"`
	At          int64  `json:"at"` // Unix seconds
}

// Page asks for one page of a list, newest first.
type Page struct {
	Limit  int    // 1..100
	Cursor string // "" for the first page; the NextCursor of the previous page
}

// Store is what the sidecar needs of a key backend. Every method is safe for
// concurrent use. Mutations take the audit event to write with the change;
// the store fills EventID, APIKeyID, WorkspaceID and At.
type Store interface {
	// Create stores k with the hash of its secret. ErrConflict when the id
	// exists (the caller picks another), ErrFull when there is no room.
	Create(ctx context.Context, k *Key, secretHash [32]byte, ev Event) error
	// Get returns the key id of workspace ws; ErrNotFound otherwise.
	Get(ctx context.Context, ws, id string) (*Key, error)
	// List returns a page of the workspace's keys, newest first, and the
	// cursor of the next page ("" when this is the last).
	List(ctx context.Context, ws string, p Page) ([]*Key, string, error)
	// Revoke marks the key revoked at at. Revoking a revoked key changes
	// nothing and writes no event.
	Revoke(ctx context.Context, ws, id string, at int64, ev Event) (*Key, error)
	// Roll makes newHash the key's secret; the previous secret stays valid
	// until oldValidUntil (≤ now: not at all). ErrRevoked for a revoked key.
	Roll(ctx context.Context, ws, id string, newHash [32]byte, hint string, now, oldValidUntil int64, ev Event) (*Key, error)
	// Lookup returns the facts of the key whose secret hashes to h;
	// ErrNotFound when no key has it.
	Lookup(ctx context.Context, h [32]byte) (*apikey.Facts, error)
	// Record writes an event that goes with no change (a denied attempt).
	Record(ctx context.Context, ev Event) error
	// Events lists a workspace's events, newest first, of one key when
	// apiKeyID is not empty.
	Events(ctx context.Context, ws, apiKeyID string, p Page) ([]*Event, string, error)
	// TouchLastUsed raises lastUsedAt of the given keys (id → Unix seconds).
	TouchLastUsed(ctx context.Context, used map[string]int64) error
	// Ready reports whether the store can serve.
	Ready(ctx context.Context) error
	Close() error
}
