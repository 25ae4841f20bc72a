package store_test

import (
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/storetest"
)

// freshDB is an empty database for one test (storetest.FreshDatabase on
// KEYGATE_TEST_POSTGRES); without it the test skips, or fails under CI.
func freshDB(t testing.TB) string {
	t.Helper()
	return storetest.FreshDatabase(t, pgAdminURL(t))
}

func pgAdminURL(t testing.TB) string { return storetest.PostgresURL(t, "KEYGATE_TEST_POSTGRES") }

var quiet = slog.New(slog.DiscardHandler)

func openPostgres(t testing.TB, dsn string) *store.Postgres {
	t.Helper()
	p, err := store.OpenPostgres(context.Background(), dsn, store.PostgresOptions{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPostgresConformance(t *testing.T) {
	t.Parallel()
	pgAdminURL(t)
	storetest.Exercise(t, func(t *testing.T) store.Store { return openPostgres(t, freshDB(t)) })
}

// Several sidecars starting at once on an empty database: every one opens,
// each migration is applied exactly once.
func TestPostgresConcurrentMigration(t *testing.T) {
	t.Parallel()
	dsn := freshDB(t)
	const openers = 8
	var wg sync.WaitGroup
	stores := make([]*store.Postgres, openers)
	errs := make([]error, openers)
	for i := range openers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = store.OpenPostgres(context.Background(), dsn, store.PostgresOptions{Logger: quiet})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("opener %d: %v", i, err)
		}
		defer stores[i].Close()
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n, distinct int
	if err := conn.QueryRow(ctx, "SELECT count(*), count(DISTINCT version) FROM schema_migrations").Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if n != distinct || n == 0 {
		t.Fatalf("schema_migrations: %d rows, %d versions", n, distinct)
	}
	// Every opener works on the one schema.
	k := &store.Key{ID: apikey.NewID(apikey.Live), WorkspaceID: "ws", Name: "n", Scopes: []string{}, IPWhitelist: []string{}, CreatedAt: time.Now().Unix()}
	h := apikey.Hash(apikey.NewSecret(apikey.Live).Reveal())
	if err := stores[0].Create(ctx, k, h, store.Event{EventID: "e" + k.ID, Action: store.ActionCreated}); err != nil {
		t.Fatal(err)
	}
	if _, err := stores[openers-1].Lookup(ctx, h); err != nil {
		t.Fatal(err)
	}
	// Opening again changes nothing.
	again := openPostgres(t, dsn)
	again.Close()
	var n2 int
	conn.QueryRow(ctx, "SELECT count(*) FROM schema_migrations").Scan(&n2)
	if n2 != n {
		t.Fatalf("reopen applied migrations again: %d → %d", n, n2)
	}
}

// Only hashes are at rest, and what is stored round-trips exactly.
func TestPostgresStoresOnlyHashes(t *testing.T) {
	t.Parallel()
	dsn := freshDB(t)
	p := openPostgres(t, dsn)
	defer p.Close()
	ctx := context.Background()
	secret := apikey.NewSecret(apikey.Live).Reveal()
	k := &store.Key{ID: apikey.NewID(apikey.Live), WorkspaceID: "ws", Name: "n", Mode: apikey.Test,
		Scopes: []string{"a:b"}, IPWhitelist: []string{"10.0.0.0/8", "::1"}, CreatedAt: 1_700_000_000, ExpiresAt: 1_900_000_000, SecretHint: "sk_live_…abcd"}
	if err := p.Create(ctx, k, apikey.Hash(secret), store.Event{EventID: "e1", Action: store.ActionCreated, Actor: store.Actor{Admin: true}}); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var dump string
	if err := conn.QueryRow(ctx, `SELECT (SELECT string_agg(k::text, '|') FROM keys k) || (SELECT string_agg(s::text, '|') FROM secrets s) || (SELECT string_agg(e::text, '|') FROM events e)`).Scan(&dump); err != nil {
		t.Fatal(err)
	}
	if contains(dump, secret[8:]) || contains(dump, hex.EncodeToString([]byte(secret[8:]))) {
		t.Fatal("secret material at rest")
	}
	got, err := p.Get(ctx, "ws", k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Mode != apikey.Test || got.CreatedAt != k.CreatedAt || got.ExpiresAt != k.ExpiresAt || got.SecretHint != k.SecretHint ||
		len(got.IPWhitelist) != 2 || got.IPWhitelist[1] != "::1" || len(got.Secrets) != 1 || got.Secrets[0].Hash != apikey.Hash(secret) {
		t.Fatalf("round trip: %+v", got)
	}
	evs, _, _ := p.Events(ctx, "ws", k.ID, store.Page{Limit: 5})
	if len(evs) != 1 || !evs[0].Actor.Admin || evs[0].At != k.CreatedAt {
		t.Fatalf("event: %+v", evs)
	}
}

// A full disk in PostgreSQL (SQLSTATE 53100, disk_full) is ErrFull, which
// the sidecar answers 507, and leaves nothing stored; the same create
// succeeds once there is room. The server raises the error from a trigger,
// where a full disk would raise it from the insert.
func TestPostgresDiskFullIsFull(t *testing.T) {
	t.Parallel()
	dsn := freshDB(t)
	p := openPostgres(t, dsn)
	defer p.Close()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{
		`CREATE FUNCTION keygate_test_full() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = '53100'; END $$`,
		`CREATE TRIGGER keygate_test_full BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION keygate_test_full()`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	secret := apikey.NewSecret(apikey.Live).Reveal()
	k := &store.Key{ID: apikey.NewID(apikey.Live), WorkspaceID: "ws", Name: "n", Mode: apikey.Live,
		Scopes: []string{"a:b"}, IPWhitelist: []string{}, CreatedAt: 1_700_000_000}
	ev := store.Event{EventID: "e1", Action: store.ActionCreated}
	if err := p.Create(ctx, k, apikey.Hash(secret), ev); !errors.Is(err, store.ErrFull) {
		t.Fatalf("create on a full disk: %v, want ErrFull", err)
	}
	if _, err := p.Get(ctx, "ws", k.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a create that failed for room left its key: %v", err)
	}
	if _, err := p.Lookup(ctx, apikey.Hash(secret)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a create that failed for room left its secret: %v", err)
	}
	if err := p.Ready(ctx); err != nil {
		t.Fatalf("not ready after a full disk: %v", err)
	}
	if _, err := conn.Exec(ctx, `DROP TRIGGER keygate_test_full ON events`); err != nil {
		t.Fatal(err)
	}
	if err := p.Create(ctx, k, apikey.Hash(secret), ev); err != nil {
		t.Fatalf("create once there is room: %v", err)
	}
	if f, err := p.Lookup(ctx, apikey.Hash(secret)); err != nil || f.APIKeyID != k.ID {
		t.Fatalf("lookup after room: %+v %v", f, err)
	}
}

// Roll windows exactly as bbolt: earlier secrets keep the smaller window,
// and the secrets list of the key says so.
func TestPostgresRollWindowsMatchBolt(t *testing.T) {
	t.Parallel()
	pgAdminURL(t)
	pg := openPostgres(t, freshDB(t))
	defer pg.Close()
	bb := openBolt(t)
	defer bb.Close()
	ctx := context.Background()
	now := time.Now().Unix()
	for _, s := range []store.Store{pg, bb} {
		k := &store.Key{ID: "sk_live_0000000000000a", WorkspaceID: "ws", Name: "n", Scopes: []string{}, IPWhitelist: []string{}, CreatedAt: now}
		if err := s.Create(ctx, k, apikey.Hash("s0"), store.Event{EventID: "c", Action: store.ActionCreated}); err != nil {
			t.Fatal(err)
		}
		steps := []struct{ secret, until int64 }{{1, now + 100}, {2, now + 50}, {3, now + 500}}
		for _, st := range steps {
			if _, err := s.Roll(ctx, "ws", k.ID, apikey.Hash(string(rune('0'+st.secret))), "h", now, st.until, store.Event{EventID: "r", Action: store.ActionRolled}); err != nil {
				t.Fatal(err)
			}
		}
		// A roll whose new hash is one of the key's own secrets conflicts.
		if _, err := s.Roll(ctx, "ws", k.ID, apikey.Hash("s0"), "h", now, now, store.Event{EventID: "r", Action: store.ActionRolled}); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("%T roll to own secret: %v", s, err)
		}
	}
	a, _ := pg.Get(ctx, "ws", "sk_live_0000000000000a")
	b, _ := bb.Get(ctx, "ws", "sk_live_0000000000000a")
	if len(a.Secrets) != len(b.Secrets) {
		t.Fatalf("secrets: pg %+v bolt %+v", a.Secrets, b.Secrets)
	}
	for i := range a.Secrets {
		if a.Secrets[i] != b.Secrets[i] {
			t.Fatalf("secret %d: pg %+v bolt %+v", i, a.Secrets[i], b.Secrets[i])
		}
	}
	for _, sec := range []string{"s0", "1", "2", "3"} {
		fa, ea := pg.Lookup(ctx, apikey.Hash(sec))
		fb, eb := bb.Lookup(ctx, apikey.Hash(sec))
		if (ea == nil) != (eb == nil) || errors.Is(ea, store.ErrNotFound) != errors.Is(eb, store.ErrNotFound) || fa != nil && fa.ExpiresAt != fb.ExpiresAt {
			t.Fatalf("lookup %s: pg %+v %v bolt %+v %v", sec, fa, ea, fb, eb)
		}
	}
}

// Two stores on one database: a revoke through one reaches the other's
// Subscribe callback through LISTEN/NOTIFY well within the 1 s bound, and
// the other reads the key revoked by then (the sidecar's cache test wires
// the callback to its cache).
func TestPostgresNotifyInvalidates(t *testing.T) {
	t.Parallel()
	dsn := freshDB(t)
	a := openPostgres(t, dsn)
	defer a.Close()
	b := openPostgres(t, dsn)
	defer b.Close()
	var calls atomic.Int64
	subscribed := make(chan struct{}, 1)
	ids := make(chan string, 16)
	b.Subscribe(context.Background(), func(id string) {
		calls.Add(1)
		if id != "" {
			select {
			case ids <- id:
			default:
			}
		}
		select {
		case subscribed <- struct{}{}:
		default:
		}
	})
	<-subscribed // the call after connecting
	ctx := context.Background()
	secret := apikey.NewSecret(apikey.Live).Reveal()
	k := &store.Key{ID: apikey.NewID(apikey.Live), WorkspaceID: "ws", Name: "n", Scopes: []string{}, IPWhitelist: []string{}, CreatedAt: time.Now().Unix()}
	if err := a.Create(ctx, k, apikey.Hash(secret), store.Event{EventID: "c", Action: store.ActionCreated}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the create's own notification, if any, arrives
	before := calls.Load()
	revoked := time.Now()
	if _, err := a.Revoke(ctx, "ws", k.ID, revoked.Unix(), store.Event{EventID: "r", Action: store.ActionRevoked}); err != nil {
		t.Fatal(err)
	}
	for calls.Load() == before {
		if time.Since(revoked) > time.Second {
			t.Fatal("no invalidation on b within 1 s of a revoke on a")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("b was told of the revoke after %s", time.Since(revoked))
	if f, err := b.Lookup(ctx, apikey.Hash(secret)); err != nil || !f.Revoked {
		t.Fatalf("lookup on b after the invalidation: %+v %v", f, err)
	}
	select { // the notification names the key, so the plugins drop only its facts
	case id := <-ids:
		if id != k.ID {
			t.Errorf("notification named %q, want %q", id, k.ID)
		}
	case <-time.After(time.Second):
		t.Error("no notification named the revoked key")
	}
	// In steady state the watchdog stays quiet: only notifications invalidate.
	n := calls.Load()
	time.Sleep(time.Second)
	if extra := calls.Load() - n; extra > 1 {
		t.Errorf("%d spurious invalidations in 1 s with a healthy listener", extra)
	}
}

// A listener whose connection is killed re-subscribes and invalidates; one
// that cannot prove it is current invalidates on its own within the lease.
func TestPostgresListenerLostConnection(t *testing.T) {
	t.Parallel()
	dsn := freshDB(t)
	p := openPostgres(t, dsn)
	defer p.Close()
	var calls atomic.Int64
	p.Subscribe(context.Background(), func(string) { calls.Add(1) })
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	listeners := func() int {
		var n int
		conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = 'LISTEN `+store.NotifyChannel+`'`).Scan(&n)
		return n
	}
	waitFor("the LISTEN connection", func() bool { return listeners() == 1 })
	n := calls.Load()
	var killed int
	if err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name LIKE '% listen pid=%'`).Scan(&killed); err != nil || killed != 1 {
		t.Fatalf("terminate listener: %d %v", killed, err)
	}
	waitFor("a re-subscription", func() bool { return calls.Load() > n && listeners() == 1 })
}

func TestPostgresClosedAndUnavailable(t *testing.T) {
	t.Parallel()
	pgAdminURL(t)
	// Nothing listens on port 1: opening fails fast and says why.
	start := time.Now()
	_, err := store.OpenPostgres(context.Background(), "postgres://u:secretpw@127.0.0.1:1/db?connect_timeout=1", store.PostgresOptions{Logger: quiet})
	if !errors.Is(err, store.ErrUnavailable) || contains(err.Error(), "secretpw") {
		t.Fatalf("open unreachable: %v", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Fatalf("open unreachable took %s", time.Since(start))
	}
	p := openPostgres(t, freshDB(t))
	if err := p.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if err := p.Ready(context.Background()); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("ready after close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}
