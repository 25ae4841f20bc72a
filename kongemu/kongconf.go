package kongemu

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// KongConf is what kongemu takes from a kong.conf: the settings of Kong
// that decide what the plugin sees. The zero value is Kong's defaults
// (kong/templates/kong_defaults.lua, 3.8.1 and 3.9.1): no plugin server,
// no nginx_main_env, log_level notice, trusted_ips none (trust nobody),
// real_ip_header X-Real-IP, real_ip_recursive off.
type KongConf struct {
	// Prefix is Kong's prefix (default /usr/local/kong/ in Kong; kongemu
	// uses a temporary directory when it is empty).
	Prefix string

	// PluginServers are pluginserver_names with their
	// pluginserver_<name>_start_cmd, _query_cmd and _socket.
	PluginServers []PluginServer

	// Plugins is the plugins list ("bundled,keygate"); nil: not given
	// (Kong's default "bundled", which holds no Go plugin).
	Plugins []string

	// MainEnv is every `env` directive nginx_main_env injects in nginx's
	// main context (kong/templates/nginx.lua: "$(el.name) $(el.value);",
	// so "A; env B" gives two directives).
	MainEnv []EnvDirective

	// LogLevel is log_level (default notice).
	LogLevel LogLevel

	// TrustedIPs, RealIPHeader and RealIPRecursive are trusted_ips,
	// real_ip_header (default X-Real-IP) and real_ip_recursive.
	TrustedIPs      []netip.Prefix
	RealIPHeader    string
	RealIPRecursive bool
}

// PluginServer is one entry of pluginserver_names. Empty commands and
// socket take Kong's defaults (see Socket, StartCmd and QueryCmd).
type PluginServer struct {
	Name     string
	StartCmd string
	QueryCmd string
	Socket   string
}

// EnvDirective is nginx's `env NAME` or `env NAME=value`.
type EnvDirective struct {
	Name     string
	Value    string
	HasValue bool
}

// KongVersion selects the few rules that differ between the Kong versions
// kongemu plays.
type KongVersion string

// The Kong versions kongemu plays. Earlier versions are not supported by
// keygate (see docs/KONG-FIDELITY.md).
const (
	Kong38 KongVersion = "3.8"
	Kong39 KongVersion = "3.9"
)

// defaultPluginServerPath is DEFAULT_PLUGINSERVER_PATH
// (kong/conf_loader/constants.lua 3.9.1; hard-coded in
// kong/runloop/plugin_servers/process.lua 3.8.1).
const defaultPluginServerPath = "/usr/local/bin"

// SocketPath is where Kong connects to the plugin server: the _socket
// setting, else <prefix>/<name>.socket on 3.9 (kong/conf_loader/init.lua
// 3.9.1) and /usr/local/kong/<name>.socket on 3.8 whatever the prefix
// (kong/runloop/plugin_servers/process.lua 3.8.1).
func (ps PluginServer) SocketPath(v KongVersion, prefix string) string {
	if ps.Socket != "" {
		return ps.Socket
	}
	if v == Kong38 {
		return "/usr/local/kong/" + ps.Name + ".socket"
	}
	return strings.TrimRight(prefix, "/") + "/" + ps.Name + ".socket"
}

// Commands are the start and query commands with Kong's defaults: the
// given ones, else /usr/local/bin/<name> when that file exists; the query
// default is "/usr/local/bin/<name> -dump" on 3.9 (conf_loader/init.lua
// 3.9.1) and /usr/local/bin/query_<name> on 3.8 (process.lua 3.8.1). An
// empty start command means the process is managed outside Kong.
func (ps PluginServer) Commands(v KongVersion) (start, query string) {
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	start, query = ps.StartCmd, ps.QueryCmd
	def := defaultPluginServerPath + "/" + ps.Name
	if start == "" && exists(def) {
		start = def
	}
	if query == "" {
		switch {
		case v == Kong38 && exists(defaultPluginServerPath+"/query_"+ps.Name):
			query = defaultPluginServerPath + "/query_" + ps.Name
		case v != Kong38 && exists(def):
			query = def + " -dump"
		}
	}
	return start, query
}

// LogLevel is one of nginx's error_log levels, as Kong's log_level.
type LogLevel int

// nginx's levels, lowest first (kong/conf_loader/constants.lua: log_level
// enum). The zero value is notice, Kong's default.
const (
	LevelDebug LogLevel = iota - 2
	LevelInfo
	LevelNotice
	LevelWarn
	LevelError
	LevelCrit
	LevelAlert
	LevelEmerg
)

var levelNames = []string{"debug", "info", "notice", "warn", "error", "crit", "alert", "emerg"}

func (l LogLevel) String() string {
	if i := int(l - LevelDebug); i >= 0 && i < len(levelNames) {
		return levelNames[i]
	}
	return fmt.Sprintf("LogLevel(%d)", int(l))
}

// ParseLogLevel accepts the names of Kong's log_level.
func ParseLogLevel(s string) (LogLevel, error) {
	i := slices.Index(levelNames, s)
	if i < 0 {
		return 0, fmt.Errorf("log_level %q: want one of %s", s, strings.Join(levelNames, ", "))
	}
	return LevelDebug + LogLevel(i), nil
}

// LoadKongConf reads a kong.conf file; KONG_<KEY> variables of this
// process override its keys, as in Kong (kong/conf_loader/init.lua).
func LoadKongConf(path string) (*KongConf, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read kong.conf: %w", err)
	}
	c, err := ParseKongConf(b, os.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// trailingComment is Kong's strip_comments: a # not escaped as \# ends
// the value (kong/conf_loader/init.lua load_config, 3.8.1 and 3.9.1).
var trailingComment = regexp.MustCompile(`\s*(^|[^\\])#.*$`)

// parseConfLines reads key = value lines as penlight's pl.config.read does
// with Kong's options (smart = false): blank lines and # comments skipped,
// a trailing backslash continues a line, the key is everything before the
// first "=" with non-alphanumerics turned into "_", the value is trimmed,
// and a later line of the same key replaces an earlier one.
func parseConfLines(b []byte) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	var cont string
	for sc.Scan() {
		line := cont + strings.TrimLeft(sc.Text(), " \t")
		cont = ""
		if strings.HasSuffix(line, `\`) {
			cont = strings.TrimSuffix(line, `\`)
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		k = strings.Map(func(r rune) rune {
			if r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				return r
			}
			return '_'
		}, strings.TrimSpace(k))
		v = strings.TrimSpace(v)
		if m := trailingComment.FindStringSubmatchIndex(v); m != nil {
			v = strings.TrimSpace(v[:m[3]])
		}
		out[k] = strings.ReplaceAll(v, `\#`, "#")
	}
	return out
}

// ParseKongConf parses kong.conf text. lookupEnv (nil: none) supplies
// KONG_<KEY> overrides. Only the keys KongConf describes are read; every
// other key is ignored, as Kong ignores the keys it does not use for the
// plugin's side of a request (kongemu proxies no TLS, runs no admin API).
func ParseKongConf(b []byte, lookupEnv func(string) (string, bool)) (*KongConf, error) {
	kv := parseConfLines(b)
	get := func(key string) (string, bool) {
		if lookupEnv != nil {
			if v, ok := lookupEnv("KONG_" + strings.ToUpper(key)); ok {
				return strings.TrimSpace(v), true
			}
		}
		v, ok := kv[key]
		return v, ok
	}
	var errs []error
	c := &KongConf{}
	if v, ok := get("prefix"); ok {
		c.Prefix = v
	}
	if v, ok := get("log_level"); ok {
		lvl, err := ParseLogLevel(v)
		if err != nil {
			errs = append(errs, err)
		}
		c.LogLevel = lvl
	}
	if v, ok := get("trusted_ips"); ok {
		p, err := ParseTrustedIPs(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("trusted_ips: %w", err))
		}
		c.TrustedIPs = p
	}
	// real_ip_header and real_ip_recursive are aliases of
	// nginx_proxy_real_ip_header and nginx_proxy_real_ip_recursive, which
	// the nginx template reads; an alias fills its property only when the
	// property itself is unset (kong/conf_loader/constants.lua
	// aliased_properties and kong/conf_loader/init.lua, 3.8.1 and 3.9.1).
	aliased := func(prop, alias string) (string, bool) {
		if v, ok := get(prop); ok {
			return v, true
		}
		return get(alias)
	}
	if v, ok := aliased("nginx_proxy_real_ip_header", "real_ip_header"); ok {
		c.RealIPHeader = v
	}
	if v, ok := aliased("nginx_proxy_real_ip_recursive", "real_ip_recursive"); ok {
		switch v {
		case "on":
			c.RealIPRecursive = true
		case "off":
		default:
			errs = append(errs, fmt.Errorf("real_ip_recursive %q: want on or off", v))
		}
	}
	if v, ok := get("plugins"); ok {
		c.Plugins = splitArray(v)
	}
	if v, ok := get("nginx_main_env"); ok {
		env, err := parseMainEnv(v)
		if err != nil {
			errs = append(errs, err)
		}
		c.MainEnv = env
	}
	if v, ok := get("pluginserver_names"); ok {
		for _, name := range splitArray(v) {
			name = strings.ToLower(name)
			if name == "none" { // kong_defaults.lua: pluginserver_names = NONE
				continue
			}
			key := "pluginserver_" + strings.ReplaceAll(name, "-", "_")
			ps := PluginServer{Name: name}
			ps.StartCmd, _ = get(key + "_start_cmd")
			ps.QueryCmd, _ = get(key + "_query_cmd")
			ps.Socket, _ = get(key + "_socket")
			c.PluginServers = append(c.PluginServers, ps)
		}
	}
	return c, errors.Join(errs...)
}

// splitArray is Kong's "array" type: comma-separated, trimmed, empty
// entries dropped (kong/conf_loader/parse.lua).
func splitArray(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// parseMainEnv turns an nginx_main_env value into env directives. Kong
// writes "env <value>;" into nginx.conf (kong/templates/nginx.lua, 3.8.1
// and 3.9.1), so a value "A; env B=x" is the two directives `env A;` and
// `env B=x;`. Other directives smuggled the same way are refused: kongemu
// has no nginx to give them to.
func parseMainEnv(v string) ([]EnvDirective, error) {
	var out []EnvDirective
	for i, part := range strings.Split(v, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if i > 0 {
			rest, ok := strings.CutPrefix(part, "env ")
			if !ok {
				return nil, fmt.Errorf("nginx_main_env: %q after \";\" is not an env directive (kongemu plays only env)", part)
			}
			part = strings.TrimSpace(rest)
		}
		name, value, has := strings.Cut(part, "=")
		if name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("nginx_main_env: bad variable %q", part)
		}
		out = append(out, EnvDirective{Name: name, Value: value, HasValue: has})
	}
	return out, nil
}

// workerEnv is the environment an nginx worker keeps from parent, and so
// the environment of the plugin server Kong spawns from worker 0: only the
// variables `env` directives name (with their values when given), plus TZ,
// which nginx keeps unless an env directive names it (ngx_set_environment
// in nginx's src/core/nginx.c; "By default, nginx removes all environment
// variables inherited from its parent process except the TZ variable",
// ngx_core_module docs).
func workerEnv(parent []string, directives []EnvDirective) []string {
	lookup := func(name string) (string, bool) {
		for i := len(parent) - 1; i >= 0; i-- {
			if k, v, ok := strings.Cut(parent[i], "="); ok && k == name {
				return v, true
			}
		}
		return "", false
	}
	var out []string
	seen := map[string]bool{}
	add := func(d EnvDirective) {
		if seen[d.Name] {
			return
		}
		seen[d.Name] = true
		if d.HasValue {
			out = append(out, d.Name+"="+d.Value)
		} else if v, ok := lookup(d.Name); ok {
			out = append(out, d.Name+"="+v)
		}
	}
	for _, d := range directives {
		add(d)
	}
	add(EnvDirective{Name: "TZ"})
	return out
}

// resolvePrefix makes a relative prefix absolute, as Kong does.
func resolvePrefix(p string) (string, error) {
	if p == "" {
		return "", nil
	}
	return filepath.Abs(p)
}
