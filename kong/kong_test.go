// Package kong_test checks the Kong deployment files: kong.yml passes decK's
// validation and every keygate entry in it is a valid plugin config, and
// schema.lua declares exactly the fields, types and defaults of the Go
// Config that `keygate -dump` prints.
package kong_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/keygate/keygate/plugin"
	"go.yaml.in/yaml/v3"
)

// tool finds a Debian tool; in CI a missing tool is a failure, not a skip.
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed (.ci/run installs it)", name)
		}
		t.Skipf("%s not installed: apt-get install %s", name, name)
	}
	return p
}

// declarativeFiles are the decK files of the repository: the demo's and
// the deployment's.
var declarativeFiles = []string{"kong.yml", "../deploy/kong.yml"}

func TestDeckValidate(t *testing.T) {
	t.Parallel()
	for _, f := range declarativeFiles {
		out, err := exec.Command(tool(t, "deck"), "validate", "-s", f).CombinedOutput()
		if err != nil {
			t.Fatalf("deck validate %s: %v\n%s", f, err, out)
		}
	}
}

// publicValues are the values of the declarative files that must be
// replaced before use (the demo and the e2e suite do; an operator does),
// with fresh stand-ins.
var publicValues = map[string]string{
	plugin.DemoJWTSecret:                                "fresh-jwt-secret-0123456789-0123456789",
	plugin.DemoPartnerCode:                              "fresh-partner-code",
	plugin.DemoPublicCode:                               "fresh-public-code",
	"CHANGE-ME-to-a-random-secret-of-at-least-32-bytes": "fresh-jwt-secret-0123456789-0123456789",
	"CHANGE-ME-partner-access-code":                     "fresh-partner-code",
	"CHANGE-ME-public-access-code":                      "fresh-public-code",
}

// Every keygate plugin entry of each declarative file is refused as written
// exactly when it holds a public value (the demo's secrets, deploy/'s
// CHANGE-ME placeholders), and is a config the plugin accepts once those
// are replaced.
func TestKongYAMLPluginConfigs(t *testing.T) {
	for _, f := range declarativeFiles {
		t.Run(f, func(t *testing.T) { checkPluginConfigs(t, f) })
	}
}

func checkPluginConfigs(t *testing.T, file string) {
	t.Setenv(plugin.EnvGatewaySecret, "kong-test-gateway-secret-0000")
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	fresh := string(raw)
	for public, v := range publicValues {
		fresh = strings.ReplaceAll(fresh, public, v)
	}
	asWritten := pluginConfigs(t, raw)
	for i, c := range pluginConfigs(t, []byte(fresh)) {
		if err := c.Validate(); err != nil {
			t.Fatalf("route %d: config invalid once the public values are replaced: %v", i, err)
		}
		err := asWritten[i].Validate()
		if c.RouteRole == plugin.RoleManage {
			if err == nil || !strings.Contains(err.Error(), "jwt_secret is the public demo secret") || !strings.Contains(err.Error(), "portal_codes: the access code") {
				t.Errorf("manage route %d as written: %v, want its public jwt_secret and portal codes refused", i, err)
			}
		} else if err != nil {
			t.Errorf("route %d as written: %v", i, err)
		}
	}
}

// pluginConfigs decodes every keygate plugin config of a declarative file.
func pluginConfigs(t *testing.T, raw []byte) []*plugin.Config {
	t.Helper()
	var doc struct {
		Format   string `yaml:"_format_version"`
		Services []struct {
			Name   string `yaml:"name"`
			Routes []struct {
				Name    string           `yaml:"name"`
				Plugins []map[string]any `yaml:"plugins"`
			} `yaml:"routes"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Format != "3.0" {
		t.Fatalf("_format_version %q", doc.Format)
	}
	roles := map[string]int{}
	var configs []*plugin.Config
	for _, s := range doc.Services {
		for _, r := range s.Routes {
			for _, p := range r.Plugins {
				if p["name"] != "keygate" {
					t.Fatalf("route %s: unexpected plugin %v", r.Name, p["name"])
				}
				js, _ := json.Marshal(p["config"])
				c := new(plugin.Config)
				if err := json.Unmarshal(js, c); err != nil {
					t.Fatalf("route %s: %v", r.Name, err)
				}
				roles[c.RouteRole]++
				configs = append(configs, c)
			}
		}
	}
	if roles["manage"] == 0 || roles["enforce"] == 0 {
		t.Fatalf("no manage or no enforce route: %v", roles)
	}
	return configs
}

type luaField struct {
	name, typ, elem string
	required        bool
	def             string
}

func luaFields(t *testing.T) []luaField {
	t.Helper()
	out, err := exec.Command(tool(t, "luajit"), "testdata/schema_fields.lua", "../schema.lua").CombinedOutput()
	if err != nil {
		t.Fatalf("luajit schema.lua: %v\n%s", err, out)
	}
	var fields []luaField
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		p := strings.Split(line, "\t")
		if len(p) != 5 {
			t.Fatalf("bad line %q", line)
		}
		fields = append(fields, luaField{p[0], p[1], p[2], p[3] == "true", p[4]})
	}
	return fields
}

// dumpFields builds keygate and reads the config fields of `keygate -dump`.
func dumpFields(t *testing.T) []luaField {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "keygate")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/keygate").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "-dump").Output()
	if err != nil {
		t.Fatalf("-dump: %v", err)
	}
	var info struct {
		Plugins []struct {
			Name   string
			Phases []string
			Schema struct {
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
		t.Fatalf("-dump output: %v\n%s", err, out)
	}
	if len(info.Plugins) != 1 || info.Plugins[0].Name != "keygate" || fmt.Sprint(info.Plugins[0].Phases) != "[access]" {
		t.Fatalf("-dump plugin info: %s", out)
	}
	var fields []luaField
	for _, f := range info.Plugins[0].Schema.Fields {
		cfg, ok := f["config"]
		if !ok {
			continue
		}
		for _, cf := range cfg.Fields {
			for name, d := range cf {
				lf := luaField{name: name, typ: d.Type}
				switch {
				case d.Elements != nil:
					lf.elem = d.Elements.Type
				case d.Keys != nil:
					lf.elem = d.Keys.Type + ":" + d.Values.Type
				}
				fields = append(fields, lf)
			}
		}
	}
	return fields
}

func TestSchemaLuaMatchesDump(t *testing.T) {
	t.Parallel()
	lua := luaFields(t)
	dump := dumpFields(t)
	if len(lua) != len(dump) {
		t.Fatalf("schema.lua has %d config fields, keygate -dump %d", len(lua), len(dump))
	}
	for i := range lua {
		if lua[i].name != dump[i].name || lua[i].typ != dump[i].typ || lua[i].elem != dump[i].elem {
			t.Errorf("field %d: schema.lua %s %s %s, -dump %s %s %s", i, lua[i].name, lua[i].typ, lua[i].elem, dump[i].name, dump[i].typ, dump[i].elem)
		}
	}
	// Defaults in schema.lua are the ones the Go code applies.
	want := map[string]string{
		"sidecar_url":              plugin.DefaultSidecarURL,
		"sidecar_timeout_ms":       strconv.Itoa(plugin.DefaultSidecarTimeoutMS),
		"jwt_leeway_seconds":       strconv.Itoa(plugin.DefaultLeewaySeconds),
		"roles_claim":              plugin.DefaultRolesClaim,
		"cache_ttl_ms":             strconv.Itoa(plugin.DefaultCacheTTLMS),
		"failure_limit_per_minute": strconv.Itoa(plugin.DefaultFailureLimitPerMinute),
		"failure_burst":            strconv.Itoa(plugin.DefaultFailureBurst),
		"test_mode_portals":        "{PARTNER}",
		"key_headers":              "{Authorization,X-API-Key}",
		"allowed_modes":            "{LIVE}",
		"hide_credentials":         "true",
		"route_role":               "nil",
		"required_scopes":          "nil",
		"gateway_secret":           "nil",
	}
	for _, f := range lua {
		if w, ok := want[f.name]; ok && f.def != w {
			t.Errorf("%s: schema.lua default %s, Go default %s", f.name, f.def, w)
		}
	}
	if !lua[0].required || lua[0].name != "route_role" {
		t.Errorf("route_role must be required")
	}
}
