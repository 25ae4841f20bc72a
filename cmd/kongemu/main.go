// Command kongemu drives a go-pdk plugin binary the way Kong 3.8/3.9 does
// and proxies HTTP for a declarative kong.yml. It is a development and test
// harness, not a gateway; see package kongemu.
//
//	kongemu --config kong/kong.yml --conf kong.conf --listen 127.0.0.1:8000 \
//	        [--kong-version 3.9] [--prefix DIR] [--expose-pdk-calls] [--event-timeout D]
//	kongemu --config kong/kong.yml --plugin PATH/keygate ...
//
// --conf reads what Kong takes from kong.conf (plugin server registration,
// nginx_main_env, log_level, trusted_ips, real_ip_header,
// real_ip_recursive); without it Kong's defaults apply and --plugin names
// the plugin binary. --trusted-ips, --real-ip-header and
// --real-ip-recursive, when given, replace the kong.conf keys of the same
// names. SIGHUP reloads kong.yml as `kong reload` does; SIGINT and SIGTERM
// stop kongemu.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/keygate/keygate/internal/buildinfo"
	"github.com/keygate/keygate/kongemu"
)

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if errors.Is(err, errVersion) {
		fmt.Println("kongemu", buildinfo.Version())
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kongemu: %v\n", err)
		os.Exit(2)
	}
	// kong.conf's log_level decides which of Kong's lines are written.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default: // one pending reload is enough
			}
		}
	}()
	cfg.Reload = reload
	if err := kongemu.Run(ctx, cfg, logger); err != nil {
		logger.Error("kongemu failed", "err", err)
		os.Exit(1)
	}
}

// errVersion: --version was asked for.
var errVersion = errors.New("version")

// parseFlags turns the command line into a kongemu.Config.
func parseFlags(args []string, out io.Writer) (cfg kongemu.Config, err error) {
	fs := flag.NewFlagSet("kongemu", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, `kongemu plays Kong 3.8/3.9's side of the Go plugin-server protocol, so that
keygate's plugin runs end to end without Kong: it starts the plugin binary as
Kong does (-dump, then -kong-prefix DIR), reads a declarative kong.yml
(services, routes, keygate plugin entries) and proxies HTTP through the
plugin. A development and test harness, not a gateway: production runs Kong.

Usage:
  kongemu --config kong/kong.yml --conf kong.conf [--listen 127.0.0.1:8000] [flags]
  kongemu --config kong/kong.yml --plugin PATH/keygate [--listen 127.0.0.1:8000] [flags]

  kongemu --version

SIGHUP reloads kong.yml as kong reload does; SIGINT and SIGTERM stop it.

Flags:
`)
		fs.PrintDefaults()
	}
	var conf, trusted, header, version string
	var recursive, showVersion bool
	fs.BoolVar(&showVersion, "version", false, "print the version and exit")
	fs.StringVar(&cfg.ConfigPath, "config", "kong/kong.yml", "declarative config (_format_version 3.0)")
	fs.StringVar(&conf, "conf", "", "kong.conf to read Kong's settings from (default: Kong's defaults)")
	fs.StringVar(&version, "kong-version", "3.9", "Kong version whose rules to play: 3.8 or 3.9")
	fs.StringVar(&cfg.PluginPath, "plugin", "", "plugin server binary when kong.conf registers none; its base name is the plugin name")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:8000", "proxy listen address")
	fs.StringVar(&cfg.Prefix, "prefix", "", "Kong prefix (default: kong.conf's prefix, else a temporary directory)")
	fs.StringVar(&trusted, "trusted-ips", "", "replaces kong.conf's trusted_ips: comma-separated addresses or CIDRs")
	fs.StringVar(&header, "real-ip-header", "", "replaces kong.conf's real_ip_header (Kong's default X-Real-IP)")
	fs.BoolVar(&recursive, "real-ip-recursive", false, "replaces kong.conf's real_ip_recursive")
	fs.BoolVar(&cfg.ExposePDKCalls, "expose-pdk-calls", false, "add X-Kongemu-Pdk-Calls and X-Kongemu-Pdk-Methods to responses the plugin ran for")
	fs.DurationVar(&cfg.EventTimeout, "event-timeout", 0, "bound on one plugin event (default 30s)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if showVersion {
		return cfg, errVersion
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg.KongVersion = kongemu.KongVersion(version)
	cfg.Kong = &kongemu.KongConf{}
	if conf != "" {
		if cfg.Kong, err = kongemu.LoadKongConf(conf); err != nil {
			return cfg, err
		}
	}
	if cfg.PluginPath == "" && len(cfg.Kong.PluginServers) == 0 {
		return cfg, errors.New("--plugin is required when --conf registers no pluginserver")
	}
	var ferr error
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "trusted-ips":
			if cfg.Kong.TrustedIPs, err = kongemu.ParseTrustedIPs(trusted); err != nil {
				ferr = fmt.Errorf("--trusted-ips: %w", err)
			}
		case "real-ip-header":
			cfg.Kong.RealIPHeader = header
		case "real-ip-recursive":
			cfg.Kong.RealIPRecursive = recursive
		}
	})
	return cfg, ferr
}
