// Command kongemu drives a go-pdk plugin binary the way Kong does and
// proxies HTTP for a declarative kong.yml. It is a development and test
// harness, not a gateway; see package kongemu.
//
//	kongemu --config kong/kong.yml --plugin PATH/keygate --listen 127.0.0.1:8000 \
//	        [--prefix DIR] [--trusted-ips CIDR,...] [--real-ip-header NAME] \
//	        [--real-ip-recursive] [--expose-pdk-calls] [--event-timeout D] [--debug]
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

	"github.com/keygate/keygate/kongemu"
)

func main() {
	cfg, debug, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kongemu: %v\n", err)
		os.Exit(2)
	}
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := kongemu.Run(ctx, cfg, logger); err != nil {
		logger.Error("kongemu failed", "err", err)
		os.Exit(1)
	}
}

// parseFlags turns the command line into a kongemu.Config.
func parseFlags(args []string, out io.Writer) (cfg kongemu.Config, debug bool, err error) {
	fs := flag.NewFlagSet("kongemu", flag.ContinueOnError)
	fs.SetOutput(out)
	var trusted string
	fs.StringVar(&cfg.ConfigPath, "config", "kong/kong.yml", "declarative config (_format_version 3.0)")
	fs.StringVar(&cfg.PluginPath, "plugin", "", "plugin server binary; its base name is the plugin name (required)")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:8000", "proxy listen address")
	fs.StringVar(&cfg.Prefix, "prefix", "", "Kong prefix for the plugin socket (default: a temporary directory)")
	fs.StringVar(&trusted, "trusted-ips", "", "comma-separated trusted proxy addresses or CIDRs (Kong trusted_ips; default: none)")
	fs.StringVar(&cfg.RealIPHeader, "real-ip-header", "X-Forwarded-For", "header carrying the client address (Kong real_ip_header)")
	fs.BoolVar(&cfg.RealIPRecursive, "real-ip-recursive", false, "skip trusted addresses in that header (Kong real_ip_recursive)")
	fs.BoolVar(&cfg.ExposePDKCalls, "expose-pdk-calls", false, "add X-Kongemu-Pdk-Calls and X-Kongemu-Pdk-Methods to responses the plugin ran for")
	fs.DurationVar(&cfg.EventTimeout, "event-timeout", 0, "bound on one plugin event (default 30s)")
	fs.BoolVar(&debug, "debug", false, "log at debug level")
	if err := fs.Parse(args); err != nil {
		return cfg, false, err
	}
	if fs.NArg() > 0 {
		return cfg, false, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.PluginPath == "" {
		return cfg, false, errors.New("--plugin is required")
	}
	if cfg.TrustedIPs, err = kongemu.ParseTrustedIPs(trusted); err != nil {
		return cfg, false, fmt.Errorf("--trusted-ips: %w", err)
	}
	return cfg, debug, nil
}
