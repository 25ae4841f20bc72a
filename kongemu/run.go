package kongemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"os"
	"time"
)

// Config configures Run. Zero values take the defaults documented per field.
type Config struct {
	// ConfigPath is the declarative configuration file (kong.yml).
	// Declarative, when set, is used instead.
	ConfigPath  string
	Declarative *Declarative

	// PluginPath is the plugin server binary; its base name is the plugin
	// name.
	PluginPath string

	// Listen is the proxy address (default 127.0.0.1:8000). Listener, when
	// set, is used instead and closed by Run.
	Listen   string
	Listener net.Listener

	// Prefix is Kong's prefix, where the plugin creates <name>.socket.
	// Default: a temporary directory removed when Run returns.
	Prefix string

	// TrustedIPs, RealIPHeader (default X-Forwarded-For) and
	// RealIPRecursive are Kong's trusted_ips, real_ip_header and
	// real_ip_recursive. With no trusted IPs nobody is trusted.
	TrustedIPs      []netip.Prefix
	RealIPHeader    string
	RealIPRecursive bool

	// ExposePDKCalls adds X-Kongemu-Pdk-Calls and X-Kongemu-Pdk-Methods to
	// every response the plugin ran for.
	ExposePDKCalls bool

	// EventTimeout bounds one access event, PDK calls included
	// (default 30 s); over it the request fails with 500.
	EventTimeout time.Duration
	// StartTimeout bounds the wait for the plugin socket (default 5 s).
	StartTimeout time.Duration
	// ShutdownTimeout bounds draining on stop (default 10 s).
	ShutdownTimeout time.Duration
	// MaxPluginConns bounds connections to the plugin socket (default 32).
	MaxPluginConns int

	// HTTP server limits (defaults: 10 s, 60 s, 120 s, 120 s, 64 KiB).
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8000"
	}
	if c.RealIPHeader == "" {
		c.RealIPHeader = "X-Forwarded-For"
	}
	def(&c.EventTimeout, 30*time.Second)
	def(&c.StartTimeout, 5*time.Second)
	def(&c.ShutdownTimeout, 10*time.Second)
	def(&c.ReadHeaderTimeout, 10*time.Second)
	def(&c.ReadTimeout, 60*time.Second)
	def(&c.WriteTimeout, 120*time.Second)
	def(&c.IdleTimeout, 120*time.Second)
	if c.MaxPluginConns == 0 {
		c.MaxPluginConns = 32
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 64 << 10
	}
	return c
}

// Validate reports every problem of a Config at once.
func (c Config) Validate() error {
	var errs []error
	if c.ConfigPath == "" && c.Declarative == nil {
		errs = append(errs, errors.New("a declarative config is required"))
	}
	if c.PluginPath == "" {
		errs = append(errs, errors.New("a plugin binary is required"))
	}
	if c.EventTimeout < 0 || c.StartTimeout < 0 || c.ShutdownTimeout < 0 {
		errs = append(errs, errors.New("timeouts must not be negative"))
	}
	if c.MaxPluginConns < 0 {
		errs = append(errs, errors.New("max plugin connections must not be negative"))
	}
	return errors.Join(errs...)
}

// Run loads the declarative config, checks and starts the plugin server,
// starts its instances and proxies HTTP until ctx ends; then it stops
// accepting, drains in-flight requests and stops the plugin. It returns nil
// after a clean stop.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) error {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("kongemu config: %w", err)
	}
	if logger == nil {
		logger = slog.Default()
	}
	decl := cfg.Declarative
	if decl == nil {
		var err error
		if decl, err = LoadDeclarative(cfg.ConfigPath); err != nil {
			return err
		}
	}
	info, err := queryPlugin(ctx, cfg.PluginPath)
	if err != nil {
		return err
	}
	tbl, err := compile(decl, info.name, info.schema)
	if err != nil {
		return fmt.Errorf("declarative config: %w", err)
	}

	ln := cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
	}
	defer ln.Close()

	prefix := cfg.Prefix
	if prefix == "" {
		if prefix, err = tempPrefix(); err != nil {
			return fmt.Errorf("prefix: %w", err)
		}
		defer os.RemoveAll(prefix)
	} else if err := os.MkdirAll(prefix, 0o755); err != nil {
		return fmt.Errorf("prefix: %w", err)
	}

	proc := newProcess(cfg.PluginPath, prefix, info.name, logger)
	procCtx, stopProc := context.WithCancel(context.WithoutCancel(ctx))
	go proc.supervise(procCtx)
	defer func() {
		stopProc()
		<-proc.done
	}()
	if err := proc.waitSocket(ctx, cfg.StartTimeout); err != nil {
		return err
	}

	s := &server{
		cfg: cfg, logger: logger, info: info, table: tbl,
		client:  newClient(proc, cfg.MaxPluginConns, logger),
		realip:  &realIP{trusted: cfg.TrustedIPs, header: cfg.RealIPHeader, recursive: cfg.RealIPRecursive},
		proxies: map[*service]*httputil.ReverseProxy{},
	}
	defer s.client.closeIdle()
	for _, rt := range tbl.routes {
		if s.proxies[rt.svc] == nil {
			s.proxies[rt.svc] = s.newProxy(rt.svc)
		}
	}
	for _, in := range tbl.instances {
		sctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
		if _, err := s.client.ensure(sctx, in); err != nil {
			// As in Kong: logged, and requests on its routes answer 500.
			logger.Error("plugin instance failed to start", "entry", in.where, "err", err)
		}
		cancel()
	}

	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	logger.Info("kongemu listening", "addr", ln.Addr().String(), "plugin", info.name,
		"routes", len(tbl.routes), "instances", len(tbl.instances), "prefix", prefix)

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("kongemu stopping")
	dctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(dctx); err != nil {
		logger.Warn("drain incomplete", "err", err)
		srv.Close()
	}
	return nil
}
