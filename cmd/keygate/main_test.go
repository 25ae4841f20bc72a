package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/keygate/keygate/plugin"
)

// TestDump builds the binary and checks what Kong reads from `keygate -dump`:
// the name, the access phase and every config field with its type.
func TestDump(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "keygate")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "-dump").Output()
	if err != nil {
		t.Fatalf("keygate -dump: %v", err)
	}
	var info struct {
		Protocol string
		Plugins  []struct {
			Name     string
			Phases   []string
			Priority int
			Schema   struct {
				Name   string
				Fields []map[string]struct {
					Type   string
					Fields []map[string]struct {
						Type     string
						Elements *struct{ Type string }
						Keys     *struct{ Type string }
						Values   *struct{ Type string }
					}
				}
			}
		}
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatalf("dump is not JSON: %v\n%s", err, out)
	}
	if info.Protocol != "ProtoBuf:1" || len(info.Plugins) != 1 {
		t.Fatalf("dump: %s", out)
	}
	p := info.Plugins[0]
	if p.Name != "keygate" || p.Schema.Name != "keygate" || !slices.Equal(p.Phases, []string{"access"}) || p.Priority != 1260 {
		t.Errorf("name %q phases %q priority %d", p.Name, p.Phases, p.Priority)
	}
	want := []string{
		"route_role:string", "sidecar_url:string", "sidecar_ca_file:string", "sidecar_timeout_ms:integer", "gateway_secret:string",
		"jwt_algorithms:array<string>", "jwt_secret:string", "jwt_public_keys:array<string>", "jwks_url:string",
		"jwt_issuer:string", "jwt_audience:string", "jwt_leeway_seconds:integer", "roles_claim:string",
		"portal_codes:map<string,string>", "test_mode_portals:array<string>", "key_headers:array<string>",
		"required_scopes:array<string>", "allowed_modes:array<string>", "hide_credentials:boolean", "cache_ttl_ms:integer", "cache_ttl_pushed_ms:integer",
		"failure_limit_per_minute:integer", "failure_burst:integer",
	}
	var got []string
	for _, f := range p.Schema.Fields {
		cfg, ok := f["config"]
		if !ok || cfg.Type != "record" {
			t.Fatalf("schema fields: %s", out)
		}
		for _, field := range cfg.Fields {
			for name, d := range field {
				s := name + ":" + d.Type
				switch {
				case d.Elements != nil:
					s += "<" + d.Elements.Type + ">"
				case d.Keys != nil && d.Values != nil:
					s += "<" + d.Keys.Type + "," + d.Values.Type + ">"
				}
				got = append(got, s)
			}
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("config fields\n got %q\nwant %q", got, want)
	}
}

// buildKeygate builds the binary into a fresh directory.
func buildKeygate(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "keygate")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestCommandLineExplainsItself: --version and --help answer and exit 0;
// run by hand where it cannot listen, keygate says Kong starts it and how
// to run it anyway, beside the listen error.
func TestCommandLineExplainsItself(t *testing.T) {
	bin := buildKeygate(t)
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "keygate ") || !strings.Contains(string(out), "(plugin version "+plugin.Version+")") {
		t.Errorf("--version: %q, %v", out, err)
	}
	out, err = exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Errorf("--help exits with %v", err)
	}
	for _, want := range []string{"Kong Go plugin", "pluginserver_keygate_start_cmd", "-kong-prefix", "-dump"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("--help lacks %q:\n%s", want, out)
		}
	}
	// The registration both print is kong/kong.conf's, line for line.
	conf, err := os.ReadFile("../../kong/kong.conf")
	if err != nil {
		t.Fatal(err)
	}
	confLines := map[string]bool{}
	for _, l := range strings.Split(string(conf), "\n") {
		confLines[strings.TrimSpace(l)] = true
	}
	for _, l := range strings.Split(strings.TrimSpace(registration), "\n") {
		if !confLines[strings.TrimSpace(l)] {
			t.Errorf("registration line %q is not in kong/kong.conf", strings.TrimSpace(l))
		}
		if !strings.Contains(string(out), strings.TrimSpace(l)) {
			t.Errorf("--help lacks the registration line %q", strings.TrimSpace(l))
		}
	}
	prefix := filepath.Join(t.TempDir(), "no-such-prefix")
	out, err = exec.Command(bin, "-kong-prefix", prefix).CombinedOutput()
	if err == nil {
		t.Fatalf("keygate listened in a directory that does not exist:\n%s", out)
	}
	for _, want := range []string{filepath.Join(prefix, "keygate.socket"), "Kong starts it itself", "keygate -kong-prefix DIR", "pluginserver_keygate_socket = /usr/local/kong/keygate.socket"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("run by hand, the output lacks %q:\n%s", want, out)
		}
	}
}
