package store

import (
	"context"
	"embed"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/keygate/keygate/internal/apikey"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

const (
	// NotifyChannel is the LISTEN/NOTIFY channel of invalidations; the
	// payload is the key id.
	NotifyChannel = "keygate_invalidate"
	// migrationLock is the pg_advisory_xact_lock key serializing migrations
	// ("keygate" in ASCII).
	migrationLock = int64(0x6b657967617465)

	pingInterval = 200 * time.Millisecond
	pingTimeout  = 300 * time.Millisecond
	leaseTTL     = 600 * time.Millisecond
	watchTick    = 100 * time.Millisecond
	minBackoff   = 50 * time.Millisecond
	maxBackoff   = 2 * time.Second
)

// MaxStaleness is how long after a change committed through another
// sidecar this one may still serve its cached view: the listener's lease
// plus one watchdog tick (see Subscribe).
func (p *Postgres) MaxStaleness() time.Duration { return leaseTTL + watchTick }

// PostgresOptions tune the PostgreSQL backend; zero values take the defaults.
type PostgresOptions struct {
	// OpTimeout bounds each call whose context has no deadline (default 5 s).
	OpTimeout time.Duration
	// ConnectTimeout bounds one connection attempt unless the URL sets
	// connect_timeout (default 3 s).
	ConnectTimeout time.Duration
	// MaxConns is the pool size unless the URL sets pool_max_conns
	// (default 16).
	MaxConns int32
	// ApplicationName tags the connections in pg_stat_activity unless the
	// URL sets application_name (default keygate-sidecar); the LISTEN
	// connection gets " listen pid=<pid>" appended.
	ApplicationName string
	Logger          *slog.Logger
}

// Postgres is the PostgreSQL backend: several sidecars (one per Kong node,
// or a few shared) on one database.
//
// Semantics are those of Bolt, method for method (storetest.Exercise runs
// against both): only SHA-256 hashes of secrets are stored; Create writes the
// key, its secret hash and its audit event in one statement; a failed write
// stores nothing; Revoke is idempotent and writes no second event; Roll keeps
// earlier secrets open for the window, never longer than they had, and
// deletes those whose window has passed. A write is acknowledged after
// PostgreSQL commits it (synchronous_commit as the server is configured).
//
// Cluster-wide invalidation. Every Revoke and Roll runs
// pg_notify('keygate_invalidate', key id) in its transaction, so the
// notification is sent if and only if the change commits. Subscribe keeps a
// dedicated connection LISTENing on that channel and calls its callback (the
// sidecar passes its verify cache's invalidate):
//
//   - on every notification, as it is read;
//   - once after every successful (re)connect and LISTEN, because
//     notifications sent while it was disconnected are lost;
//   - every 100 ms while its lease has run out (below).
//
// The lease is what bounds a revoked key's life in any node's cache to 1 s
// even when notifications are lost (connection dropped, database down,
// network silently partitioned). The listener pings PostgreSQL over the
// LISTEN connection every 200 ms. PostgreSQL delivers a listening session's
// pending notifications before the ReadyForQuery that ends each command, and
// TCP keeps their order, so once two consecutive pings, the first sent at t,
// have been answered, every change committed before t has reached the
// callback. The lease anchor is that t; when it is more than 600 ms old the
// watchdog calls the callback every 100 ms, until a ping succeeds again.
// Hence, for a change committed at R, the callback runs at some time in
// [R, R+0.7 s] on every node (plus scheduling delay), and a cache entry
// filled before that call is a miss afterwards (the sidecar cache's
// generation check);
// entries filled after it read the change. While the lease is out the cache
// is effectively bypassed: lookups go to the database and fail closed with
// ErrUnavailable when it is down. So when PostgreSQL goes away, cached keys
// keep verifying for at most ~0.7 s, then every verification fails closed
// until it returns; nothing needs restarting.
//
// Connection failures are reported as ErrUnavailable (the sidecar answers
// 503/5030), unique violations as ErrConflict, disk full (SQLSTATE 53100) as
// ErrFull, anything after Close as ErrClosed. Calls whose context has no
// deadline get PostgresOptions.OpTimeout.
//
// Migrations (store/migrations/NNNN_name.sql, embedded) are applied at open
// in one transaction holding pg_advisory_xact_lock, recorded in
// schema_migrations: sidecars starting together apply each exactly once.
// Migrations are additive; a database migrated further than this binary
// knows is used as is.
type Postgres struct {
	pool   *pgxpool.Pool
	listen *pgconn.Config // template of the LISTEN connection
	opts   PostgresOptions
	log    *slog.Logger
	t0     time.Time // monotonic base of the listener's clock

	mu     sync.Mutex // guards closed transitions with wg.Add
	closed atomic.Bool
	base   context.Context
	stop   context.CancelFunc
	wg     sync.WaitGroup
}

var _ Store = (*Postgres)(nil)

// OpenPostgres connects to the database at url (postgres://…; the password
// may come from PGPASSWORD or ~/.pgpass instead) and applies the pending
// migrations. It fails when the database cannot be reached within ctx (or
// 10 s without a deadline).
func OpenPostgres(ctx context.Context, url string, o PostgresOptions) (*Postgres, error) {
	if o.OpTimeout <= 0 {
		o.OpTimeout = 5 * time.Second
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 3 * time.Second
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 16
	}
	if o.ApplicationName == "" {
		o.ApplicationName = "keygate-sidecar"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("open key store: %w", err) // pgx redacts the password
	}
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = o.MaxConns
	}
	if !strings.Contains(url, "connect_timeout") {
		cfg.ConnConfig.ConnectTimeout = o.ConnectTimeout
	}
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = o.ApplicationName
	}
	listen := cfg.ConnConfig.Config.Copy()
	listen.RuntimeParams["application_name"] = fmt.Sprintf("%s listen pid=%d", cfg.ConnConfig.RuntimeParams["application_name"], os.Getpid())

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open key store: %w", err)
	}
	p := &Postgres{pool: pool, listen: listen, opts: o, log: o.Logger, t0: time.Now()}
	p.base, p.stop = context.WithCancel(context.Background())
	if err := p.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open key store %s: %w", redact(cfg.ConnConfig), p.mapErr(ctx, ctx, err))
	}
	return p, nil
}

func redact(c *pgx.ConnConfig) string {
	return fmt.Sprintf("postgres://%s@%s:%d/%s", c.User, c.Host, c.Port, c.Database)
}

type migration struct {
	version int
	name    string
	sql     string
}

func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, n := range names {
		base := strings.TrimPrefix(n, "migrations/")
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_name.sql", base)
		}
		b, err := migrationFiles.ReadFile(n)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{v, strings.TrimSuffix(base, ".sql"), string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i := 1; i < len(out); i++ {
		if out[i].version == out[i-1].version {
			return nil, fmt.Errorf("migration version %d twice", out[i].version)
		}
	}
	return out, nil
}

// migrate applies the pending migrations in one transaction under an
// advisory lock: concurrent openers wait for the first and then find
// nothing to do.
func (p *Postgres) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLock); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version integer PRIMARY KEY,
			name text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "SELECT version FROM schema_migrations")
		if err != nil {
			return err
		}
		applied, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			return err
		}
		done := map[int]bool{}
		for _, v := range applied {
			done[int(v)] = true
		}
		for _, m := range ms {
			if done[m.version] {
				continue
			}
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
				return err
			}
			p.log.Info("key store migrated", "migration", m.name)
		}
		return nil
	})
}

// op returns the context of one call: ctx with OpTimeout when it has no
// deadline. It fails with ErrClosed after Close.
func (p *Postgres) op(ctx context.Context) (context.Context, context.CancelFunc, error) {
	if p.closed.Load() {
		return nil, nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}, nil
	}
	c, cancel := context.WithTimeout(ctx, p.opts.OpTimeout)
	return c, cancel, nil
}

// mapErr turns a pgx error into the store's errors. caller is the context
// the caller gave, opCtx the one the call ran under.
func (p *Postgres) mapErr(caller, opCtx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict) || errors.Is(err, ErrRevoked) ||
		errors.Is(err, ErrCursor) || errors.Is(err, ErrClosed) || errors.Is(err, ErrUnavailable) || errors.Is(err, ErrFull) {
		return err
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "23505": // unique_violation
			return ErrConflict
		case pe.Code == "53100": // disk_full
			return fmt.Errorf("%w: %v", ErrFull, err)
		case strings.HasPrefix(pe.Code, "08"), // connection_exception
			strings.HasPrefix(pe.Code, "53"),                           // insufficient_resources
			pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03", // shutdown, crash, cannot connect now
			pe.Code == "25006",                     // read_only_sql_transaction: a standby after failover
			pe.Code == "40001", pe.Code == "40P01": // serialization failure, deadlock: retryable
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		return err
	}
	if p.closed.Load() {
		return ErrClosed
	}
	if cerr := caller.Err(); cerr != nil {
		return cerr
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	if errors.As(err, &ce) || errors.As(err, &ne) || opCtx.Err() != nil || pgconn.Timeout(err) ||
		pgconn.SafeToRetry(err) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return err
}

// read runs a read-only fn, once more when the first attempt found a broken
// connection (as after a database restart).
func (p *Postgres) read(ctx context.Context, fn func(ctx context.Context) error) error {
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		c, cancel, oerr := p.op(ctx)
		if oerr != nil {
			return oerr
		}
		err = p.mapErr(ctx, c, fn(c))
		cancel()
		if !errors.Is(err, ErrUnavailable) {
			return err
		}
	}
	return err
}

// write runs fn once.
func (p *Postgres) write(ctx context.Context, fn func(ctx context.Context) error) error {
	c, cancel, err := p.op(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	return p.mapErr(ctx, c, fn(c))
}

func tsOf(unix int64) *time.Time {
	if unix == 0 {
		return nil
	}
	t := time.Unix(unix, 0).UTC()
	return &t
}

func unixOf(t *time.Time) int64 {
	if t == nil {
		return 0
	}
	return t.Unix()
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// keyCols are the columns scanKey reads, from keys k.
const keyCols = `k.id, k.workspace_id, k.name, k.mode, k.scopes, k.ip_whitelist, k.created_at,
	k.expires_at, k.revoked_at, k.last_used_at, k.secret_hint, k.seq,
	ARRAY(SELECT s.hash FROM secrets s WHERE s.key_id = k.id ORDER BY s.valid_until ASC NULLS LAST),
	ARRAY(SELECT COALESCE(EXTRACT(EPOCH FROM s.valid_until)::bigint, 0) FROM secrets s WHERE s.key_id = k.id ORDER BY s.valid_until ASC NULLS LAST)`

func scanKey(row pgx.Row) (*Key, int64, error) {
	var (
		k                      Key
		mode                   int16
		created                time.Time
		expires, revoked, used *time.Time
		seq                    int64
		hashes                 [][]byte
		untils                 []int64
	)
	err := row.Scan(&k.ID, &k.WorkspaceID, &k.Name, &mode, &k.Scopes, &k.IPWhitelist, &created,
		&expires, &revoked, &used, &k.SecretHint, &seq, &hashes, &untils)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, 0, ErrNotFound
		}
		return nil, 0, err
	}
	k.Mode = apikey.Mode(mode)
	k.CreatedAt, k.ExpiresAt, k.RevokedAt, k.LastUsedAt = created.Unix(), unixOf(expires), unixOf(revoked), unixOf(used)
	if len(hashes) != len(untils) {
		return nil, 0, fmt.Errorf("store: key %s: secrets changed while read", k.ID)
	}
	k.Secrets = make([]SecretRef, len(hashes))
	for i, h := range hashes {
		if len(h) != 32 {
			return nil, 0, fmt.Errorf("store: key %s: bad secret hash length %d", k.ID, len(h))
		}
		copy(k.Secrets[i].Hash[:], h)
		k.Secrets[i].Until = untils[i]
	}
	return &k, seq, nil
}

const eventInsert = `INSERT INTO events (event_id, workspace_id, api_key_id, action, code,
	actor_sub, actor_portal, actor_admin, request_id, at)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`

func eventArgs(ev *Event) []any {
	return []any{ev.EventID, ev.WorkspaceID, ev.APIKeyID, ev.Action, ev.Code,
		ev.Actor.Sub, ev.Actor.Portal, ev.Actor.Admin, ev.RequestID, time.Unix(ev.At, 0).UTC()}
}

func prepEvent(ev *Event, at int64) error {
	if ev.EventID == "" {
		return errors.New("store: event without id")
	}
	if ev.At == 0 {
		ev.At = at
	}
	return nil
}

// Create implements Store: key, secret hash and event in one statement.
func (p *Postgres) Create(ctx context.Context, k *Key, h [32]byte, ev Event) error {
	k.Secrets = []SecretRef{{Hash: SecretHash(h)}}
	ev.APIKeyID, ev.WorkspaceID = k.ID, k.WorkspaceID
	if err := prepEvent(&ev, k.CreatedAt); err != nil {
		return err
	}
	args := append([]any{k.ID, k.WorkspaceID, k.Name, int16(k.Mode), orEmpty(k.Scopes), orEmpty(k.IPWhitelist),
		time.Unix(k.CreatedAt, 0).UTC(), tsOf(k.ExpiresAt), k.SecretHint, h[:]}, eventArgs(&ev)...)
	return p.write(ctx, func(ctx context.Context) error {
		_, err := p.pool.Exec(ctx, `WITH k AS (
				INSERT INTO keys (id, workspace_id, name, mode, scopes, ip_whitelist, created_at, expires_at, secret_hint)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id
			), s AS (
				INSERT INTO secrets (hash, key_id) SELECT $10, id FROM k
			)
			INSERT INTO events (event_id, workspace_id, api_key_id, action, code,
				actor_sub, actor_portal, actor_admin, request_id, at)
			SELECT $11, $12, $13, $14, $15, $16, $17, $18, $19, $20 FROM k`, args...)
		return err
	})
}

// Get implements Store.
func (p *Postgres) Get(ctx context.Context, ws, id string) (*Key, error) {
	var k *Key
	err := p.read(ctx, func(ctx context.Context) error {
		var err error
		k, _, err = scanKey(p.pool.QueryRow(ctx, `SELECT `+keyCols+` FROM keys k WHERE k.id = $1 AND k.workspace_id = $2`, id, ws))
		return err
	})
	return k, err
}

// cursorSeq decodes a page cursor into the seq to start strictly below.
func cursorSeq(c string) (int64, error) {
	if c == "" {
		return math.MaxInt64, nil
	}
	b, err := decodeCursor(c)
	if err != nil {
		return 0, err
	}
	v := binary.BigEndian.Uint64(b)
	if v > math.MaxInt64 {
		return math.MaxInt64, nil
	}
	return int64(v), nil
}

func seqCursor(seq int64) string {
	return encodeCursor(binary.BigEndian.AppendUint64(nil, uint64(seq)))
}

// List implements Store.
func (p *Postgres) List(ctx context.Context, ws string, pg Page) ([]*Key, string, error) {
	before, err := cursorSeq(pg.Cursor)
	if err != nil {
		return nil, "", err
	}
	if pg.Limit <= 0 {
		return []*Key{}, "", nil
	}
	var (
		out  []*Key
		next string
	)
	err = p.read(ctx, func(ctx context.Context) error {
		out, next = make([]*Key, 0, pg.Limit), ""
		rows, err := p.pool.Query(ctx, `SELECT `+keyCols+` FROM keys k
			WHERE k.workspace_id = $1 AND k.seq < $2 ORDER BY k.seq DESC LIMIT $3`, ws, before, pg.Limit+1)
		if err != nil {
			return err
		}
		defer rows.Close()
		var last int64
		for rows.Next() {
			if len(out) == pg.Limit {
				next = seqCursor(last)
				break
			}
			k, seq, err := scanKey(rows)
			if err != nil {
				return err
			}
			out, last = append(out, k), seq
		}
		rows.Close()
		return rows.Err()
	})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// notify queues the invalidation of key id, sent when tx commits.
func notify(ctx context.Context, tx pgx.Tx, id string) error {
	_, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", NotifyChannel, id)
	return err
}

// Revoke implements Store.
func (p *Postgres) Revoke(ctx context.Context, ws, id string, at int64, ev Event) (*Key, error) {
	var out *Key
	err := p.write(ctx, func(ctx context.Context) error {
		return pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
			k, _, err := scanKey(tx.QueryRow(ctx, `UPDATE keys k SET revoked_at = $3
				WHERE k.id = $1 AND k.workspace_id = $2 AND k.revoked_at IS NULL RETURNING `+keyCols,
				id, ws, time.Unix(at, 0).UTC()))
			if errors.Is(err, ErrNotFound) {
				// Unknown, another workspace's, or already revoked: no change
				// and no event.
				out, _, err = scanKey(tx.QueryRow(ctx, `SELECT `+keyCols+` FROM keys k WHERE k.id = $1 AND k.workspace_id = $2`, id, ws))
				if err != nil {
					return err
				}
				return notify(ctx, tx, id)
			}
			if err != nil {
				return err
			}
			out = k
			return recordChange(ctx, tx, k, ev, at)
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// recordChange writes the audit event of a change to key k and notifies
// every sidecar, in the change's transaction.
func recordChange(ctx context.Context, tx pgx.Tx, k *Key, ev Event, at int64) error {
	ev.APIKeyID, ev.WorkspaceID = k.ID, k.WorkspaceID
	if err := prepEvent(&ev, at); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, eventInsert, eventArgs(&ev)...); err != nil {
		return err
	}
	return notify(ctx, tx, k.ID)
}

// Roll implements Store, exactly as Bolt.Roll: every secret of the key still
// open gets the window oldValidUntil (never longer than it had); secrets
// whose window has passed, or all earlier ones when oldValidUntil ≤ now, are
// deleted.
func (p *Postgres) Roll(ctx context.Context, ws, id string, newHash [32]byte, hint string, now, oldValidUntil int64, ev Event) (*Key, error) {
	var out *Key
	err := p.write(ctx, func(ctx context.Context) error {
		return pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
			k, _, err := scanKey(tx.QueryRow(ctx, `SELECT `+keyCols+` FROM keys k
				WHERE k.id = $1 AND k.workspace_id = $2 FOR UPDATE`, id, ws))
			if err != nil {
				return err
			}
			if k.RevokedAt != 0 {
				return ErrRevoked
			}
			var taken bool
			if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM secrets WHERE hash = $1)", newHash[:]).Scan(&taken); err != nil {
				return err
			}
			if taken {
				return ErrConflict
			}
			nowT, oldT := time.Unix(now, 0).UTC(), time.Unix(oldValidUntil, 0).UTC()
			if oldValidUntil <= now {
				_, err = tx.Exec(ctx, "DELETE FROM secrets WHERE key_id = $1", id)
			} else {
				_, err = tx.Exec(ctx, "DELETE FROM secrets WHERE key_id = $1 AND valid_until IS NOT NULL AND valid_until <= $2", id, nowT)
				if err == nil {
					_, err = tx.Exec(ctx, "UPDATE secrets SET valid_until = $2 WHERE key_id = $1 AND (valid_until IS NULL OR valid_until > $2)", id, oldT)
				}
			}
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "INSERT INTO secrets (hash, key_id) VALUES ($1, $2)", newHash[:], id); err != nil {
				return err
			}
			out, _, err = scanKey(tx.QueryRow(ctx, `UPDATE keys k SET secret_hint = $2 WHERE k.id = $1 RETURNING `+keyCols, id, hint))
			if err != nil {
				return err
			}
			return recordChange(ctx, tx, k, ev, now)
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Lookup implements Store.
func (p *Postgres) Lookup(ctx context.Context, h [32]byte) (*apikey.Facts, error) {
	var f *apikey.Facts
	err := p.read(ctx, func(ctx context.Context) error {
		var (
			k                       Key
			mode                    int16
			until, expires, revoked *time.Time
		)
		err := p.pool.QueryRow(ctx, `SELECT s.valid_until, k.id, k.workspace_id, k.mode, k.scopes, k.ip_whitelist,
				k.expires_at, k.revoked_at
			FROM secrets s JOIN keys k ON k.id = s.key_id WHERE s.hash = $1`, h[:]).
			Scan(&until, &k.ID, &k.WorkspaceID, &mode, &k.Scopes, &k.IPWhitelist, &expires, &revoked)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		k.Mode, k.ExpiresAt, k.RevokedAt = apikey.Mode(mode), unixOf(expires), unixOf(revoked)
		f, err = k.Facts(unixOf(until))
		return err
	})
	return f, err
}

// Record implements Store.
func (p *Postgres) Record(ctx context.Context, ev Event) error {
	if err := prepEvent(&ev, time.Now().Unix()); err != nil {
		return err
	}
	return p.write(ctx, func(ctx context.Context) error {
		_, err := p.pool.Exec(ctx, eventInsert, eventArgs(&ev)...)
		return err
	})
}

// Events implements Store.
func (p *Postgres) Events(ctx context.Context, ws, apiKeyID string, pg Page) ([]*Event, string, error) {
	before, err := cursorSeq(pg.Cursor)
	if err != nil {
		return nil, "", err
	}
	if pg.Limit <= 0 {
		return []*Event{}, "", nil
	}
	q := `SELECT seq, event_id, workspace_id, api_key_id, action, code, actor_sub, actor_portal, actor_admin, request_id, at
		FROM events WHERE workspace_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3`
	args := []any{ws, before, pg.Limit + 1}
	if apiKeyID != "" {
		q = `SELECT seq, event_id, workspace_id, api_key_id, action, code, actor_sub, actor_portal, actor_admin, request_id, at
		FROM events WHERE api_key_id = $4 AND workspace_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3`
		args = append(args, apiKeyID)
	}
	var (
		out  []*Event
		next string
	)
	err = p.read(ctx, func(ctx context.Context) error {
		out, next = make([]*Event, 0, pg.Limit), ""
		rows, err := p.pool.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		var last int64
		for rows.Next() {
			if len(out) == pg.Limit {
				next = seqCursor(last)
				break
			}
			var (
				e   Event
				seq int64
				at  time.Time
			)
			if err := rows.Scan(&seq, &e.EventID, &e.WorkspaceID, &e.APIKeyID, &e.Action, &e.Code,
				&e.Actor.Sub, &e.Actor.Portal, &e.Actor.Admin, &e.RequestID, &at); err != nil {
				return err
			}
			e.At = at.Unix()
			out, last = append(out, &e), seq
		}
		rows.Close()
		return rows.Err()
	})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// TouchLastUsed implements Store.
func (p *Postgres) TouchLastUsed(ctx context.Context, used map[string]int64) error {
	if len(used) == 0 {
		return nil
	}
	ids := make([]string, 0, len(used))
	ats := make([]time.Time, 0, len(used))
	for id, at := range used {
		ids, ats = append(ids, id), append(ats, time.Unix(at, 0).UTC())
	}
	return p.write(ctx, func(ctx context.Context) error {
		_, err := p.pool.Exec(ctx, `UPDATE keys k SET last_used_at = u.at
			FROM unnest($1::text[], $2::timestamptz[]) AS u(id, at)
			WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)`, ids, ats)
		return err
	})
}

// Ready implements Store: the database answers a ping within 2 s.
func (p *Postgres) Ready(ctx context.Context) error {
	if p.closed.Load() {
		return ErrClosed
	}
	c, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return p.mapErr(ctx, c, p.pool.Ping(c))
}

// Close stops the listeners and closes the pool. Calls after Close fail
// with ErrClosed.
func (p *Postgres) Close() error {
	p.mu.Lock()
	if p.closed.Swap(true) {
		p.mu.Unlock()
		return nil
	}
	p.stop()
	p.mu.Unlock()
	p.wg.Wait()
	p.pool.Close()
	return nil
}

// Subscribe starts the cluster-wide invalidation listener (see the
// description at the top of this file): invalidate is called with the key
// id on every notification of a revoke or roll made by any sidecar, and
// with "" (everything may be stale) once after every
// (re)connect of the LISTEN connection, and every 100 ms while the listener
// cannot prove it has seen every change committed more than 600 ms ago. It
// returns at once; the listener runs until ctx is done or the store is
// closed, reconnecting with backoff (50 ms doubling to 2 s, jittered).
// invalidate must be cheap and safe for concurrent use.
func (p *Postgres) Subscribe(ctx context.Context, invalidate func(id string)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Load() {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(p.base, cancel)
	l := &listener{p: p, fn: invalidate}
	l.anchor.Store(l.now()) // nothing cached predates the subscription
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		defer stop()
		defer cancel()
		l.run(ctx)
	}()
	go func() {
		defer p.wg.Done()
		l.watch(ctx)
	}()
}

type listener struct {
	p  *Postgres
	fn func(id string) // "": everything
	// anchor (ns on p.t0's monotonic clock): every change committed
	// before it has reached fn.
	anchor atomic.Int64
}

func (l *listener) now() int64 { return int64(time.Since(l.p.t0)) }

// watch calls fn every watchTick while the lease has run out.
func (l *listener) watch(ctx context.Context) {
	t := time.NewTicker(watchTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if l.now()-l.anchor.Load() > int64(leaseTTL) {
				l.fn("")
			}
		}
	}
}

func (l *listener) run(ctx context.Context) {
	backoff := minBackoff
	for {
		up, err := l.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if up {
			backoff = minBackoff
			l.p.log.Warn("invalidation listener lost its connection; reconnecting", "err", err)
		} else {
			l.p.log.Warn("invalidation listener cannot connect", "err", err, "retryIn", backoff.String())
		}
		d := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// session connects, LISTENs and serves notifications until the connection
// fails. up reports whether LISTEN succeeded.
func (l *listener) session(ctx context.Context) (up bool, err error) {
	cfg := l.p.listen.Copy()
	cfg.OnNotification = func(_ *pgconn.PgConn, n *pgconn.Notification) { l.fn(n.Payload) }
	cctx, cancel := context.WithTimeout(ctx, l.p.opts.ConnectTimeout+time.Second)
	conn, err := pgconn.ConnectConfig(cctx, cfg)
	cancel()
	if err != nil {
		return false, err
	}
	defer func() {
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		conn.Close(c)
		cancel()
	}()
	sent := l.now()
	cctx, cancel = context.WithTimeout(ctx, l.p.opts.ConnectTimeout)
	err = conn.Exec(cctx, "LISTEN "+NotifyChannel).Close()
	cancel()
	if err != nil {
		return false, err
	}
	// Notifications sent while we were away are lost: everything cached
	// before now is stale. Every change committed before LISTEN was sent
	// is covered by this call.
	l.fn("")
	l.anchor.Store(sent)
	l.p.log.Info("invalidation listener subscribed", "channel", NotifyChannel)
	prev := sent
	nextPing := time.Now().Add(pingInterval)
	for {
		wctx, cancel := context.WithDeadline(ctx, nextPing)
		err := conn.WaitForNotification(wctx) // calls OnNotification
		cancel()
		if ctx.Err() != nil {
			return true, nil
		}
		if err == nil {
			continue
		}
		if conn.IsClosed() || !(pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded)) {
			return true, err
		}
		s, at := l.now(), time.Now()
		pctx, cancel := context.WithTimeout(ctx, pingTimeout)
		err = conn.Ping(pctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return true, nil
			}
			return true, err
		}
		// Two pings sent at prev and s have been answered: every change
		// committed before prev has been delivered and called fn.
		l.anchor.Store(prev)
		prev = s
		nextPing = at.Add(pingInterval)
	}
}
