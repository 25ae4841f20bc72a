// Command keygate-sidecar serves keygate's key-management and verify APIs.
//
//	keygate-sidecar [--listen ADDR] [--tls-cert F --tls-key F] [--metrics-listen ADDR]
//	                [--db PATH | --store postgres://…] [--scopes-file F]
//	                [--gateway-secret-file F] [--admin-token-file F] [--version]
//
// The key store is an embedded bbolt file (--db, the default) or, for
// several sidecars sharing keys, PostgreSQL (--store; docs/SEVERAL-NODES.md).
// The database password may come from PGPASSWORD or ~/.pgpass rather than
// the URL, which other users can see in the process list.
// With --tls-cert and --tls-key the API listener serves TLS only; the pair
// is loaded again on SIGHUP or when a file changes, without a restart.
// Secrets come from KEYGATE_GATEWAY_SECRET (required) and
// KEYGATE_ADMIN_TOKEN (optional), or from the named files.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/keygate/keygate/internal/buildinfo"
	"github.com/keygate/keygate/sidecar"
	"github.com/keygate/keygate/store"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "keygate-sidecar:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on: host:port or unix:/path.sock")
	tlsCert := flag.String("tls-cert", "", "PEM certificate (chain) to serve TLS on --listen; reloaded on SIGHUP or when the file changes")
	tlsKey := flag.String("tls-key", "", "PEM private key of --tls-cert; reloaded with it")
	handover := flag.Bool("console-handover", false, "let the owner console take a token from its URL fragment (the demo's link; never in production: a link could switch an owner's session)")
	metricsListen := flag.String("metrics-listen", "", "serve GET /metrics on this address (host:port or unix:/path.sock) only, not on --listen")
	db := flag.String("db", "./data/keygate.db", "bbolt database file (its directory is created)")
	storeURL := flag.String("store", "", "PostgreSQL URL (postgres://user@host:5432/db) shared by several sidecars, instead of --db")
	scopesFile := flag.String("scopes-file", "", "optional scope catalog, one scope code a line")
	cacheMB := flag.Int("cache-mb", 16, "size of the verify cache in MiB (the sidecar's memory is about twice this, plus the store's mapped pages)")
	usageFlush := flag.Duration("usage-flush", 30*time.Second, "how often lastUsedAt marks are written (a crash loses at most this much of them)")
	gwFile := flag.String("gateway-secret-file", "", "file holding the gateway secret (else KEYGATE_GATEWAY_SECRET)")
	adminFile := flag.String("admin-token-file", "", "file holding the admin token (else KEYGATE_ADMIN_TOKEN; admin API off without it)")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Usage = usage
	flag.Parse()
	if *showVersion {
		fmt.Println("keygate-sidecar", buildinfo.Version())
		return nil
	}
	if *storeURL != "" && !strings.HasPrefix(*storeURL, "postgres://") && !strings.HasPrefix(*storeURL, "postgresql://") {
		return errors.New("--store must be a postgres:// or postgresql:// URL")
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	gw, err := secret(*gwFile, "KEYGATE_GATEWAY_SECRET")
	if err != nil {
		return err
	}
	if len(gw) == 0 {
		return errors.New("gateway secret missing: set KEYGATE_GATEWAY_SECRET (at least 16 bytes, shared with the keygate plugin) or --gateway-secret-file (see --help)")
	}
	admin, err := secret(*adminFile, "KEYGATE_ADMIN_TOKEN")
	if err != nil {
		return err
	}
	if *usageFlush <= 0 || *usageFlush > time.Minute {
		return errors.New("--usage-flush must be more than 0 and at most 1m (lastUsedAt is accurate to a minute)")
	}
	if *cacheMB < 1 || *cacheMB > 1<<20 {
		return errors.New("--cache-mb must be from 1 to 1048576")
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg := sidecar.Config{Listen: *listen, MetricsListen: *metricsListen, ConsoleHandover: *handover, TLSCert: *tlsCert, TLSKey: *tlsKey, Reload: hup,
		GatewaySecret: gw, AdminToken: admin, Logger: log,
		UsageFlushInterval: *usageFlush, Cache: sidecar.CacheOptions{MaxCost: int64(*cacheMB) << 20}}
	if *scopesFile != "" {
		if cfg.Scopes, err = sidecar.LoadScopes(*scopesFile); err != nil {
			return err
		}
	}
	// Every configuration error is fatal before anything is logged.
	if err := cfg.Validate(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if cfg.Store, err = openStore(*db, *storeURL, log); err != nil {
		return err
	}
	if err := sidecar.Run(ctx, cfg); err != nil { // closes the store
		return err
	}
	log.Info("sidecar stopped")
	return nil
}

// openStore opens the key store: PostgreSQL when url is set, else the
// bbolt file at db.
func openStore(db, url string, log *slog.Logger) (store.Store, error) {
	if url != "" {
		return store.OpenPostgres(context.Background(), url, store.PostgresOptions{Logger: log})
	}
	return store.OpenBolt(db, store.BoltOptions{})
}

// secret reads a secret from file (when named) or the environment; a file's
// trailing newline is dropped.
func secret(file, env string) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", file, err)
		}
		return []byte(strings.TrimRight(string(b), "\r\n")), nil
	}
	return []byte(os.Getenv(env)), nil
}

// usage is --help: what the program is, what it needs, then the flags.
func usage() {
	out := flag.CommandLine.Output()
	fmt.Fprint(out, `keygate-sidecar is keygate's key service. It stores workspace API keys
(an embedded bbolt file, or PostgreSQL shared by several sidecars) and serves
the key-management API that Kong's keygate plugin proxies owners to, the
verify API the plugin calls for every API key, /healthz, /readyz, /metrics,
/openapi.yaml and the owner console (/console/).

Usage: keygate-sidecar [flags]

Required: the gateway secret shared with the keygate plugin (at least 16
bytes) in $KEYGATE_GATEWAY_SECRET, or in a file named by --gateway-secret-file.
Optional: the admin token ($KEYGATE_ADMIN_TOKEN or --admin-token-file, at
least 16 bytes, not the gateway secret) turns on the admin API: operators call
the management API directly with "Authorization: Bearer <admin token>".

Example:
  export KEYGATE_GATEWAY_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  keygate-sidecar --listen 127.0.0.1:8080 --db ./data/keygate.db

Flags:
`)
	flag.PrintDefaults()
}
