package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/kongemu"
)

func TestParseFlags(t *testing.T) {
	t.Parallel()
	conf := filepath.Join(t.TempDir(), "kong.conf")
	if err := os.WriteFile(conf, []byte("plugins = bundled,kg\npluginserver_names = kg\npluginserver_kg_start_cmd = /bin/kg\n"+
		"pluginserver_kg_query_cmd = /bin/kg -dump\ntrusted_ips = 10.0.0.0/8\nreal_ip_header = X-Forwarded-For\nlog_level = info\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		wantErr string
		check   func(t *testing.T, cfg kongemu.Config)
	}{
		{
			name: "defaults are Kong's",
			args: []string{"--plugin", "/bin/keygate"},
			check: func(t *testing.T, c kongemu.Config) {
				k := c.Kong
				if c.Listen != "127.0.0.1:8000" || k.RealIPHeader != "" || len(k.TrustedIPs) != 0 || k.RealIPRecursive ||
					k.LogLevel != kongemu.LevelNotice || len(k.MainEnv) != 0 || c.ExposePDKCalls || c.EventTimeout != 0 || c.KongVersion != kongemu.Kong39 {
					t.Errorf("got %+v %+v", c, k)
				}
			},
		},
		{
			name: "kong.conf",
			args: []string{"--conf", conf, "--kong-version", "3.8"},
			check: func(t *testing.T, c kongemu.Config) {
				k := c.Kong
				if c.PluginPath != "" || len(k.PluginServers) != 1 || k.PluginServers[0].StartCmd != "/bin/kg" ||
					k.RealIPHeader != "X-Forwarded-For" || len(k.TrustedIPs) != 1 || k.LogLevel != kongemu.LevelInfo || c.KongVersion != kongemu.Kong38 {
					t.Errorf("got %+v %+v", c, k)
				}
			},
		},
		{
			name: "flags replace kong.conf keys",
			args: []string{"--conf", conf, "--config", "c.yml", "--listen", ":9000", "--trusted-ips", "10.0.0.0/8, ::1",
				"--real-ip-header", "X-Real-IP", "--real-ip-recursive", "--expose-pdk-calls", "--event-timeout", "2s"},
			check: func(t *testing.T, c kongemu.Config) {
				k := c.Kong
				if c.Listen != ":9000" || k.RealIPHeader != "X-Real-IP" || len(k.TrustedIPs) != 2 || !k.RealIPRecursive ||
					!c.ExposePDKCalls || c.EventTimeout != 2*time.Second || k.LogLevel != kongemu.LevelInfo {
					t.Errorf("got %+v %+v", c, k)
				}
			},
		},
		{name: "missing plugin", args: nil, wantErr: "--plugin is required"},
		{name: "missing kong.conf", args: []string{"--conf", conf + ".nope"}, wantErr: "read kong.conf"},
		{name: "bad trusted ips", args: []string{"--plugin", "k", "--trusted-ips", "nope"}, wantErr: "--trusted-ips"},
		{name: "stray argument", args: []string{"--plugin", "k", "extra"}, wantErr: "unexpected arguments"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseFlags(tc.args, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, cfg)
		})
	}
}

// TestHelpSaysWhatItIs: --help describes kongemu before its flags.
func TestHelpSaysWhatItIs(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	if _, err := parseFlags([]string{"--help"}, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"plays Kong 3.8/3.9's side of the Go plugin-server protocol", "not a gateway", "Usage:", "-config", "-conf"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q:\n%s", want, out.String())
		}
	}
}

// --version is answered before anything else is checked (no --plugin or
// --conf needed), as it is for keygate and keygate-sidecar.
func TestVersionFlag(t *testing.T) {
	t.Parallel()
	if _, err := parseFlags([]string{"--version"}, io.Discard); !errors.Is(err, errVersion) {
		t.Fatalf("--version: %v", err)
	}
}
