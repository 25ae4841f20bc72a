package kongemu

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Config configures Run. Zero values take the defaults documented per field.
type Config struct {
	// ConfigPath is the declarative configuration file (kong.yml).
	// Declarative, when set, is used instead.
	ConfigPath  string
	Declarative *Declarative

	// Kong is what Kong takes from kong.conf (LoadKongConf); nil is Kong's
	// defaults. KongVersion (default 3.9) picks the version's socket and
	// command defaults.
	Kong        *KongConf
	KongVersion KongVersion

	// PluginPath is a plugin server binary to run when Kong registers no
	// plugin server: it is queried with "PATH -dump" and started with
	// "PATH -kong-prefix PREFIX" (socket PREFIX/<base name>.socket). With a
	// pluginserver in Kong it must be empty.
	PluginPath string

	// Env is the environment Kong is started with (default os.Environ());
	// the plugin server gets what an nginx worker keeps of it.
	Env []string

	// Listen is the proxy address (default 127.0.0.1:8000). Listener, when
	// set, is used instead and closed by Run.
	Listen   string
	Listener net.Listener

	// Prefix is Kong's prefix, where the plugin creates <name>.socket.
	// Default: a temporary directory removed when Run returns.
	Prefix string

	// ExposePDKCalls adds X-Kongemu-Pdk-Calls and X-Kongemu-Pdk-Methods to
	// every response the plugin ran for.
	ExposePDKCalls bool

	// EventTimeout bounds one access event, PDK calls included
	// (default 30 s); over it the request fails with 500.
	EventTimeout time.Duration
	// StartTimeout bounds the wait for the plugin socket (default 5 s).
	StartTimeout time.Duration
	// Reload, when it delivers, reloads the declarative config (SIGHUP in
	// cmd/kongemu, as `kong reload` signals nginx). WatchInterval (default
	// 1 s; negative: off) is how often ConfigPath is checked for a change,
	// which reloads it too.
	Reload        <-chan struct{}
	WatchInterval time.Duration

	// ShutdownTimeout bounds draining on stop (default 10 s).
	ShutdownTimeout time.Duration
	// MaxPluginConns bounds connections to the plugin socket (default 32).
	MaxPluginConns int

	// HTTP server limits (defaults: 10 s, 60 s, 120 s, 120 s, 1 MiB). The
	// header limits of Kong's nginx are checked per request (headers.go),
	// so MaxHeaderBytes only bounds what Go's parser reads.
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
	if c.Kong == nil {
		c.Kong = &KongConf{}
	}
	if c.KongVersion == "" {
		c.KongVersion = Kong39
	}
	if c.Env == nil {
		c.Env = os.Environ()
	}
	def(&c.EventTimeout, 30*time.Second)
	def(&c.WatchInterval, time.Second)
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
		c.MaxHeaderBytes = 1 << 20
	}
	return c
}

// Validate reports every problem of a Config at once.
func (c Config) Validate() error {
	var errs []error
	if c.ConfigPath == "" && c.Declarative == nil {
		errs = append(errs, errors.New("a declarative config is required"))
	}
	kc := c.Kong
	if kc == nil {
		kc = &KongConf{}
	}
	switch n := len(kc.PluginServers); {
	case n > 1:
		errs = append(errs, fmt.Errorf("kong.conf: %d plugin servers; kongemu plays exactly one", n))
	case n == 1 && c.PluginPath != "":
		errs = append(errs, errors.New("give a plugin binary or a pluginserver in kong.conf, not both"))
	case n == 0 && c.PluginPath == "":
		errs = append(errs, errors.New("a plugin binary or a pluginserver in kong.conf is required"))
	}
	if c.KongVersion != Kong38 && c.KongVersion != Kong39 {
		errs = append(errs, fmt.Errorf("kong version %q: kongemu plays 3.8 and 3.9", c.KongVersion))
	}
	if c.EventTimeout < 0 || c.StartTimeout < 0 || c.ShutdownTimeout < 0 {
		errs = append(errs, errors.New("timeouts must not be negative"))
	}
	if c.MaxPluginConns < 0 {
		errs = append(errs, errors.New("max plugin connections must not be negative"))
	}
	return errors.Join(errs...)
}

// reload reads the declarative config again and installs it, as `kong
// reload` (or a declarative /config push) makes Kong rebuild its plugins:
// every plugin entry gets a new __seq__, its instance is started anew at
// its next event and the old one closed. A config that does not load or
// compile is logged and the running one kept. A Config.Declarative is
// installed again as it is.
func (s *server) reload(decl *Declarative, reason string) {
	if s.cfg.ConfigPath != "" && s.cfg.Declarative == nil {
		d, err := LoadDeclarative(s.cfg.ConfigPath)
		if err != nil {
			s.logger.Error("reload failed; the running configuration stays", "reason", reason, "err", err)
			return
		}
		decl = d
	}
	t, err := compile(decl, s.info.name, s.info.schema)
	if err != nil {
		s.logger.Error("reload failed; the running configuration stays", "reason", reason, "err", err)
		return
	}
	old := s.install(t)
	for _, p := range old.proxies {
		if tr, ok := p.Transport.(*http.Transport); ok {
			tr.CloseIdleConnections()
		}
	}
	s.logger.Info("declarative config reloaded", "reason", reason, "routes", len(t.routes), "instances", len(t.instances))
}

// fileSum is the SHA-256 of a file.
func fileSum(path string) ([32]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(b), nil
}

// resolvedServer is the plugin server kongemu runs.
type resolvedServer struct {
	name, start, query, socket string
	fromConf                   bool
}

// pluginServer resolves the plugin server: the one kong.conf registers,
// with Kong's defaults, or one made up for Config.PluginPath.
func (c Config) pluginServer(prefix string) (resolvedServer, error) {
	if c.PluginPath != "" {
		name := filepath.Base(c.PluginPath)
		bin := shellQuote(c.PluginPath)
		return resolvedServer{
			name: name, start: bin + " -kong-prefix " + shellQuote(prefix), query: bin + " -dump",
			socket: filepath.Join(prefix, name+".socket"),
		}, nil
	}
	ps := c.Kong.PluginServers[0]
	rs := resolvedServer{name: ps.Name, socket: ps.SocketPath(c.KongVersion, prefix), fromConf: true}
	rs.start, rs.query = ps.Commands(c.KongVersion)
	if rs.query == "" {
		// kong/conf_loader/init.lua 3.9.1 refuses it; 3.8.1 loads no plugin.
		return rs, fmt.Errorf("kong.conf: query_command undefined for pluginserver %s", ps.Name)
	}
	if rs.start == "" {
		return rs, fmt.Errorf("kong.conf: start_command undefined for pluginserver %s; kongemu does not attach to a plugin server managed outside it", ps.Name)
	}
	return rs, nil
}

// shellQuote quotes s for /bin/sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

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
	ln := cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
	}
	defer ln.Close()
	prefix, cleanup, err := cfg.makePrefix()
	if err != nil {
		return fmt.Errorf("prefix: %w", err)
	}
	defer cleanup()
	ps, err := cfg.pluginServer(prefix)
	if err != nil {
		return err
	}
	info, tbl, err := cfg.queryAndCompile(ctx, ps, decl)
	if err != nil {
		return err
	}

	klog := &kongLog{logger: logger, level: cfg.Kong.LogLevel}
	proc := newProcess(ps.name, ps.start, ps.socket, workerEnv(cfg.Env, cfg.Kong.MainEnv), logger, klog)
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
		cfg: cfg, logger: logger, info: info,
		client: newClient(proc, cfg.MaxPluginConns, logger),
		realip: newRealIP(cfg.Kong),
		klog:   klog,
	}
	defer s.client.closeIdle()
	s.install(tbl)
	s.startInstances(ctx, tbl)
	logger.Info("kongemu listening", "addr", ln.Addr().String(), "plugin", info.name,
		"routes", len(tbl.routes), "instances", len(tbl.instances), "prefix", prefix,
		"socket", ps.socket, "log_level", cfg.Kong.LogLevel.String())
	return s.serve(ctx, ln, decl)
}

// makePrefix resolves Kong's prefix (Config.Prefix, else kong.conf's, else
// a temporary directory that cleanup removes) and creates it.
func (c Config) makePrefix() (prefix string, cleanup func(), err error) {
	cleanup = func() {}
	prefix, err = resolvePrefix(c.Prefix)
	if err == nil && prefix == "" {
		prefix, err = resolvePrefix(c.Kong.Prefix)
	}
	if err != nil {
		return "", cleanup, err
	}
	if prefix == "" {
		if prefix, err = tempPrefix(); err != nil {
			return "", cleanup, err
		}
		return prefix, func() { os.RemoveAll(prefix) }, nil
	}
	return prefix, cleanup, os.MkdirAll(prefix, 0o755)
}

// queryAndCompile runs the query command and compiles the declarative
// config against the plugin it describes.
func (c Config) queryAndCompile(ctx context.Context, ps resolvedServer, decl *Declarative) (*pluginInfo, *table, error) {
	info, err := queryPlugin(ctx, ps.query, c.Env)
	if err != nil {
		return nil, nil, err
	}
	if ps.fromConf && !slices.Contains(c.Kong.Plugins, info.name) {
		// kong/db/schema/entities/plugins.lua: a plugin not in `plugins`
		// is not enabled, and a declarative config using it is refused.
		return nil, nil, fmt.Errorf("kong.conf: plugin %q not enabled; add it to the 'plugins' configuration property", info.name)
	}
	tbl, err := compile(decl, info.name, info.schema)
	if err != nil {
		return nil, nil, fmt.Errorf("declarative config: %w", err)
	}
	return info, tbl, nil
}

// startInstances starts the instances of the first configuration. Kong
// starts an instance at its entry's first event; kongemu starts them at
// once, so that a config the plugin refuses shows at start-up (its routes
// then answer 500 as in Kong).
func (s *server) startInstances(ctx context.Context, tbl *table) {
	for _, in := range tbl.instances {
		sctx, cancel := context.WithTimeout(ctx, s.cfg.StartTimeout)
		if _, err := s.client.ensure(sctx, in); err != nil {
			s.logger.Error("plugin instance failed to start", "entry", in.where, "err", err)
		}
		cancel()
	}
}

// serve proxies HTTP on ln and reloads the declarative config when told
// or when its file changes, until ctx ends; then it drains.
func (s *server) serve(ctx context.Context, ln net.Listener, decl *Declarative) error {
	cfg := s.cfg
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	var changed <-chan time.Time
	var lastSum [32]byte
	if cfg.ConfigPath != "" && cfg.Declarative == nil && cfg.WatchInterval > 0 {
		lastSum, _ = fileSum(cfg.ConfigPath)
		tick := time.NewTicker(cfg.WatchInterval)
		defer tick.Stop()
		changed = tick.C
	}
wait:
	for {
		select {
		case err := <-serveErr:
			return fmt.Errorf("serve: %w", err)
		case <-ctx.Done():
			break wait
		case <-cfg.Reload:
			s.reload(decl, "signal")
		case <-changed:
			if sum, err := fileSum(cfg.ConfigPath); err == nil && sum != lastSum {
				lastSum = sum
				s.reload(decl, "file changed")
			}
		}
	}
	s.logger.Info("kongemu stopping")
	dctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(dctx); err != nil {
		s.logger.Warn("drain incomplete", "err", err)
		srv.Close()
	}
	return nil
}
