// Command kongemu drives a go-pdk plugin binary the way Kong does and
// proxies HTTP for a declarative kong.yml. It is a development and test
// harness, not a gateway; see package kongemu.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/keygate/keygate/kongemu"
)

func main() {
	var cfg kongemu.Config
	var trusted string
	flag.StringVar(&cfg.ConfigPath, "config", "kong/kong.yml", "declarative config (_format_version 3.0)")
	flag.StringVar(&cfg.PluginPath, "plugin", "", "plugin server binary (its base name is the plugin name)")
	flag.StringVar(&cfg.Listen, "listen", "127.0.0.1:8000", "proxy listen address")
	flag.StringVar(&cfg.Prefix, "prefix", "", "Kong prefix for the plugin socket (default: a temporary directory)")
	flag.StringVar(&trusted, "trusted-ips", "", "comma-separated trusted proxy addresses/CIDRs (Kong trusted_ips)")
	flag.StringVar(&cfg.RealIPHeader, "real-ip-header", "X-Forwarded-For", "header with the client address (Kong real_ip_header)")
	flag.BoolVar(&cfg.RealIPRecursive, "real-ip-recursive", false, "skip trusted addresses in the header (Kong real_ip_recursive)")
	flag.BoolVar(&cfg.ExposePDKCalls, "expose-pdk-calls", false, "add X-Kongemu-Pdk-Calls and X-Kongemu-Pdk-Methods response headers")
	flag.DurationVar(&cfg.EventTimeout, "event-timeout", 0, "bound on one plugin event (default 30s)")
	debug := flag.Bool("debug", false, "log at debug level")
	flag.Parse()

	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	if cfg.PluginPath == "" {
		fmt.Fprintln(os.Stderr, "kongemu: --plugin is required")
		os.Exit(2)
	}
	var err error
	if cfg.TrustedIPs, err = kongemu.ParseTrustedIPs(trusted); err != nil {
		fmt.Fprintf(os.Stderr, "kongemu: --trusted-ips: %v\n", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := kongemu.Run(ctx, cfg, logger); err != nil {
		logger.Error("kongemu failed", "err", err)
		os.Exit(1)
	}
}
