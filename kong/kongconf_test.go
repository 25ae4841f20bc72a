package kong_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/keygate/keygate/kongemu"
	"github.com/keygate/keygate/plugin"
)

// kong.conf is complete for a real node, read as Kong reads it (kongemu's
// reader follows kong/conf_loader): the plugin is enabled and registered,
// its socket is where the plugin listens for Kong 3.8 and 3.9 alike, every
// environment variable the plugin reads is listed in nginx_main_env, and
// log_level is Kong's default notice.
func TestKongConfComplete(t *testing.T) {
	c, err := kongemu.LoadKongConf("kong.conf")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(c.Plugins, "keygate") || !slices.Contains(c.Plugins, "bundled") {
		t.Errorf("plugins = %q, want bundled and keygate", c.Plugins)
	}
	if len(c.PluginServers) != 1 || c.PluginServers[0].Name != "keygate" {
		t.Fatalf("plugin servers %+v, want keygate alone", c.PluginServers)
	}
	ps := c.PluginServers[0]
	start, query := ps.Commands(kongemu.Kong39)
	if start == "" || query != "/usr/local/bin/keygate -dump" || !strings.HasPrefix(start, "/usr/local/bin/keygate ") {
		t.Errorf("commands %q / %q: want full paths to /usr/local/bin/keygate", start, query)
	}
	// go-pdk listens on <-kong-prefix>/<binary name>.socket.
	_, dir, ok := strings.Cut(start, "-kong-prefix ")
	if !ok {
		t.Fatalf("start_cmd %q has no -kong-prefix", start)
	}
	listens := filepath.Join(strings.TrimSpace(dir), "keygate.socket")
	for _, v := range []kongemu.KongVersion{kongemu.Kong38, kongemu.Kong39} {
		if got := ps.SocketPath(v, "/usr/local/kong"); got != listens {
			t.Errorf("Kong %s looks for %s, the plugin listens on %s", v, got, listens)
		}
	}
	var listed []string
	for _, d := range c.MainEnv {
		listed = append(listed, d.Name)
	}
	for _, name := range pluginEnvVars(t) {
		if !slices.Contains(listed, name) {
			t.Errorf("the plugin reads %s but nginx_main_env lists only %q", name, listed)
		}
	}
	if c.LogLevel != kongemu.LevelNotice {
		t.Errorf("log_level %s, want notice", c.LogLevel)
	}
}

// pluginEnvVars is every variable the plugin's non-test code reads: the
// string constants named Env* and the literal arguments of os.Getenv and
// os.LookupEnv.
func pluginEnvVars(t *testing.T) []string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob("../plugin/*.go")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	add := func(s string) {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(af, func(n ast.Node) bool {
			if call, ok := n.(*ast.CallExpr); ok {
				if sel, ok := call.Fun.(*ast.SelectorExpr); ok && (sel.Sel.Name == "Getenv" || sel.Sel.Name == "LookupEnv") && len(call.Args) == 1 {
					if lit, ok := call.Args[0].(*ast.BasicLit); ok {
						s, _ := strconv.Unquote(lit.Value)
						add(s)
					}
				}
			}
			return true
		})
	}
	add(plugin.EnvGatewaySecret)
	add(plugin.EnvGatewaySecretFile)
	if !slices.Contains(out, "KEYGATE_LOG_LEVEL") {
		t.Fatalf("found %q: the reader no longer sees the plugin's os.Getenv calls", out)
	}
	return out
}
