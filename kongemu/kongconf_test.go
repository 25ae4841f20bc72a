package kongemu

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// A kong.conf with nothing in it is Kong's defaults.
func TestKongConfDefaults(t *testing.T) {
	t.Parallel()
	c, err := ParseKongConf([]byte("# nothing\n\nadmin_listen = off\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.LogLevel != LevelNotice || c.LogLevel.String() != "notice" || len(c.TrustedIPs) != 0 || c.RealIPRecursive ||
		len(c.MainEnv) != 0 || len(c.PluginServers) != 0 || c.Plugins != nil {
		t.Fatalf("defaults %+v", c)
	}
	if ri := newRealIP(c); ri.header != "X-Real-IP" || ri.recursive || len(ri.trusted) != 0 {
		t.Fatalf("realip defaults %+v", ri)
	}
}

func TestParseKongConf(t *testing.T) {
	t.Parallel()
	const text = `
# keygate
plugins = bundled,keygate   # trailing comment
pluginserver_names = keygate
pluginserver_keygate_start_cmd = /usr/local/bin/keygate -kong-prefix /kong
pluginserver_keygate_query_cmd = /usr/local/bin/keygate -dump
pluginserver_keygate_socket = /kong/keygate.socket
nginx_main_env = KEYGATE_GATEWAY_SECRET; env KEYGATE_LOG_LEVEL; env FIXED=a\#b
log_level = warn
log_level = info
trusted_ips = 10.0.0.0/8, 192.0.2.1 ,::1
real_ip_header = X-Forwarded-For
real_ip_recursive = on
prefix = /kong
unknown_key = whatever
`
	c, err := ParseKongConf([]byte(text), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := &KongConf{
		Prefix:  "/kong",
		Plugins: []string{"bundled", "keygate"},
		PluginServers: []PluginServer{{Name: "keygate", StartCmd: "/usr/local/bin/keygate -kong-prefix /kong",
			QueryCmd: "/usr/local/bin/keygate -dump", Socket: "/kong/keygate.socket"}},
		MainEnv: []EnvDirective{{Name: "KEYGATE_GATEWAY_SECRET"}, {Name: "KEYGATE_LOG_LEVEL"},
			{Name: "FIXED", Value: "a#b", HasValue: true}},
		LogLevel: LevelInfo, // the later line wins, as in pl.config
		TrustedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.1/32"),
			netip.MustParsePrefix("::1/128")},
		RealIPHeader: "X-Forwarded-For", RealIPRecursive: true,
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got  %+v\nwant %+v", c, want)
	}

	// KONG_<KEY> variables override the file, as in Kong.
	env := map[string]string{"KONG_LOG_LEVEL": "debug", "KONG_NGINX_MAIN_ENV": "ONLY_THIS"}
	c, err = ParseKongConf([]byte(text), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	if c.LogLevel != LevelDebug || len(c.MainEnv) != 1 || c.MainEnv[0].Name != "ONLY_THIS" {
		t.Fatalf("overrides not applied: %+v", c)
	}
}

func TestParseKongConfRejects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, text, want string }{
		{"log level", "log_level = loud", `log_level "loud"`},
		{"trusted ips", "trusted_ips = 10.0.0.0/33", "trusted_ips"},
		{"recursive", "real_ip_recursive = yes", "real_ip_recursive"},
		{"other directive in env", "nginx_main_env = A; worker_processes 2", "not an env directive"},
		{"bad env name", "nginx_main_env = A B", "bad variable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseKongConf([]byte(tc.text), nil); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}

// The plugin server's environment is what an nginx worker keeps: the
// variables env directives name, and TZ.
func TestWorkerEnv(t *testing.T) {
	t.Parallel()
	parent := []string{"HOME=/root", "KEYGATE_GATEWAY_SECRET=s", "TZ=UTC", "PATH=/bin", "KEYGATE_LOG_LEVEL=debug"}
	for _, tc := range []struct {
		name string
		env  []EnvDirective
		want []string
	}{
		{"nothing listed", nil, []string{"TZ=UTC"}},
		{"listed, one missing, one set", []EnvDirective{{Name: "KEYGATE_GATEWAY_SECRET"}, {Name: "ABSENT"}, {Name: "X", Value: "1", HasValue: true}},
			[]string{"KEYGATE_GATEWAY_SECRET=s", "X=1", "TZ=UTC"}},
		{"TZ overridden", []EnvDirective{{Name: "TZ", Value: "Europe/Paris", HasValue: true}}, []string{"TZ=Europe/Paris"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := workerEnv(parent, tc.env); !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// Kong 3.9 finds the socket under its prefix, 3.8 under /usr/local/kong
// whatever the prefix; _socket wins in both.
func TestPluginServerSocketRules(t *testing.T) {
	t.Parallel()
	ps := PluginServer{Name: "keygate"}
	if got := ps.SocketPath(Kong39, "/opt/kong/"); got != "/opt/kong/keygate.socket" {
		t.Errorf("3.9: %s", got)
	}
	if got := ps.SocketPath(Kong38, "/opt/kong"); got != "/usr/local/kong/keygate.socket" {
		t.Errorf("3.8: %s", got)
	}
	ps.Socket = "/run/kg.sock"
	if ps.SocketPath(Kong38, "/x") != "/run/kg.sock" || ps.SocketPath(Kong39, "/x") != "/run/kg.sock" {
		t.Error("_socket not used")
	}
	if _, err := os.Stat(filepath.Join(defaultPluginServerPath, "keygate")); err == nil {
		t.Skip("/usr/local/bin/keygate exists here")
	}
	if start, query := (PluginServer{Name: "keygate"}).Commands(Kong39); start != "" || query != "" {
		t.Errorf("commands default to files that do not exist: %q %q", start, query)
	}
}

func FuzzParseKongConf(f *testing.F) {
	f.Add([]byte("nginx_main_env = A; env B=c\\#d # x\nlog_level = info\ntrusted_ips = 1.2.3.4\n"))
	f.Add([]byte("pluginserver_names = a-b,c\npluginserver_a_b_start_cmd = x \\\n -y\n"))
	// Property: never panics; what parses has a known level and env
	// directives with names free of blanks.
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseKongConf(b, nil)
		if err != nil {
			return
		}
		if c.LogLevel < LevelDebug || c.LogLevel > LevelEmerg {
			t.Fatalf("level %d", c.LogLevel)
		}
		for _, d := range c.MainEnv {
			if d.Name == "" || strings.ContainsAny(d.Name, " \t") {
				t.Fatalf("env %+v", d)
			}
		}
	})
}

// The plugin process sees only what nginx_main_env lists, and TZ.
func TestPluginEnvironment(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	yml := fill(oneRouteYAML, "UPSTREAM", up.URL)
	parent := []string{"HOME=/root", "KEYGATE_GATEWAY_SECRET=s3cret", "KEYGATE_LOG_LEVEL=debug", "TZ=UTC", "OTHER=x"}
	for _, tc := range []struct {
		name, conf string
		want       []string
	}{
		{"Kong's default lists nothing", "", []string{"TZ=UTC"}},
		{"nginx_main_env with env after ;", "nginx_main_env = KEYGATE_GATEWAY_SECRET; env KEYGATE_LOG_LEVEL; env SET=v",
			[]string{"KEYGATE_GATEWAY_SECRET=s3cret", "KEYGATE_LOG_LEVEL=debug", "SET=v", "TZ=UTC"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := startEmu(t, yml, func(c *Config) { c.Env = parent; c.Kong = kongConf(t, tc.conf) })
			res := e.do(t, "GET", "/", map[string]string{"X-Test-Mode": "env"})
			if res.echo == nil {
				t.Fatalf("status %d: %s", res.status, res.body)
			}
			var got []string
			for _, kv := range strings.Split(res.echo.Header.Get("X-Seen-Env"), ",") {
				if k, _, _ := strings.Cut(kv, "="); k != "PWD" && k != "SHLVL" && k != "_" { // what /bin/sh adds
					got = append(got, kv)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("plugin environment %q, want %q", got, tc.want)
			}
		})
	}
}

// The plugin's stdout and stderr are logged at INFO as "[name:pid] line",
// so Kong's default log_level notice drops them; kong.log.* calls are
// logged at their own levels and filtered by log_level.
func TestPluginLogLevels(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	yml := fill(oneRouteYAML, "UPSTREAM", up.URL)
	all := []string{"stdout-line", "stderr-line", "klog-debug", "klog-info", "klog-notice", "klog-warn", "klog-err"}
	for _, tc := range []struct {
		name, conf string
		want       []string
	}{
		{"default notice", "", []string{"klog-notice", "klog-warn", "klog-err"}},
		{"info", "log_level = info", []string{"stdout-line", "stderr-line", "klog-info", "klog-notice", "klog-warn", "klog-err"}},
		{"error", "log_level = error", []string{"klog-err"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := startEmu(t, yml, func(c *Config) { c.Kong = kongConf(t, tc.conf) })
			if res := e.do(t, "GET", "/", map[string]string{"X-Test-Mode": "log"}); res.status != 200 {
				t.Fatalf("status %d", res.status)
			}
			// The process output arrives asynchronously: wait for what
			// must appear, then give what must not the same time.
			deadline := time.Now().Add(3 * time.Second)
			for time.Now().Before(deadline) && !containsAll(e.logs.String(), tc.want) {
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(500 * time.Millisecond)
			logs := e.logs.String()
			for _, m := range all {
				if got, want := strings.Contains(logs, m), slices.Contains(tc.want, m); got != want {
					t.Errorf("%s logged = %v, want %v", m, got, want)
				}
			}
			if slices.Contains(tc.want, "stdout-line") && !strings.Contains(logs, "[testplugin:") {
				t.Errorf("plugin output not prefixed with [testplugin:PID]:\n%s", logs)
			}
		})
	}
}

func containsAll(s string, subs []string) bool {
	for _, m := range subs {
		if !strings.Contains(s, m) {
			return false
		}
	}
	return true
}

// nginx_proxy_real_ip_header / _recursive are what the nginx template
// reads; real_ip_header / _recursive fill them only when they are unset
// (kong/conf_loader/constants.lua aliased_properties, 3.8.1 and 3.9.1).
func TestKongConfRealIPAliases(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, text string
		header     string
		recursive  bool
	}{
		{"alias only", "real_ip_header = X-Forwarded-For\nreal_ip_recursive = on", "X-Forwarded-For", true},
		{"property only", "nginx_proxy_real_ip_header = CF-Connecting-IP\nnginx_proxy_real_ip_recursive = on", "CF-Connecting-IP", true},
		{"property wins over alias", "real_ip_header = X-Forwarded-For\nnginx_proxy_real_ip_header = CF-Connecting-IP\nreal_ip_recursive = on\nnginx_proxy_real_ip_recursive = off", "CF-Connecting-IP", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseKongConf([]byte(tc.text), nil)
			if err != nil {
				t.Fatal(err)
			}
			if c.RealIPHeader != tc.header || c.RealIPRecursive != tc.recursive {
				t.Fatalf("header %q recursive %v, want %q %v", c.RealIPHeader, c.RealIPRecursive, tc.header, tc.recursive)
			}
		})
	}
}
