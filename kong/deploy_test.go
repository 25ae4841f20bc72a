package kong_test

import (
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The deployment files cannot be built or run here (no Docker engine);
// these tests keep them consistent with each other and with kong/kong.conf,
// which kongemu runs: the image registers the plugin exactly as kong.conf
// does, the sidecar listens where deploy/kong.yml points the plugin, and
// no secret is written into a file.

// kongConf reads kong/kong.conf's settings.
func kongConf(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile("kong.conf")
	if err != nil {
		t.Fatal(err)
	}
	conf := map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if ok {
			conf[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return conf
}

// dockerfileEnv reads the ENV instructions of the Dockerfile's final stage
// and its ARG defaults.
func dockerfile(t *testing.T) (env, args map[string]string, text string) {
	t.Helper()
	raw, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	text = strings.ReplaceAll(string(raw), "\\\n", " ")
	env, args = map[string]string{}, map[string]string{}
	pair := regexp.MustCompile(`([A-Z_]+)=("[^"]*"|\S+)`)
	for _, line := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(line, "ENV "):
			for _, m := range pair.FindAllStringSubmatch(line, -1) {
				env[m[1]] = strings.Trim(m[2], `"`)
			}
		case strings.HasPrefix(line, "ARG "):
			if m := pair.FindStringSubmatch(line); m != nil {
				args[m[1]] = m[2]
			}
		}
	}
	return env, args, text
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	env, args, text := dockerfile(t)
	// Kong ≥ 3.8.
	m := regexp.MustCompile(`^kong:(\d+)\.(\d+)`).FindStringSubmatch(args["KONG_IMAGE"])
	if m == nil {
		t.Fatalf("ARG KONG_IMAGE=%q is not an official kong:X.Y image", args["KONG_IMAGE"])
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	if major < 3 || (major == 3 && minor < 8) {
		t.Errorf("KONG_IMAGE %s: Kong 3.8 or later is required", args["KONG_IMAGE"])
	}
	// The plugin registered exactly as kong/kong.conf registers it.
	conf := kongConf(t)
	for key, envName := range map[string]string{
		"plugins":                        "KONG_PLUGINS",
		"pluginserver_names":             "KONG_PLUGINSERVER_NAMES",
		"pluginserver_keygate_start_cmd": "KONG_PLUGINSERVER_KEYGATE_START_CMD",
		"pluginserver_keygate_query_cmd": "KONG_PLUGINSERVER_KEYGATE_QUERY_CMD",
		"pluginserver_keygate_socket":    "KONG_PLUGINSERVER_KEYGATE_SOCKET",
		"nginx_main_env":                 "KONG_NGINX_MAIN_ENV",
	} {
		if conf[key] == "" || env[envName] != conf[key] {
			t.Errorf("Dockerfile %s=%q, kong/kong.conf %s = %q", envName, env[envName], key, conf[key])
		}
	}
	if !strings.Contains(env["KONG_NGINX_MAIN_ENV"], "KEYGATE_GATEWAY_SECRET") {
		t.Error("KONG_NGINX_MAIN_ENV does not list KEYGATE_GATEWAY_SECRET")
	}
	// The socket is in the image's prefix, where -kong-prefix puts it.
	if !strings.HasSuffix(env["KONG_PLUGINSERVER_KEYGATE_START_CMD"], "-kong-prefix /usr/local/kong") ||
		env["KONG_PLUGINSERVER_KEYGATE_SOCKET"] != "/usr/local/kong/keygate.socket" {
		t.Errorf("socket %q and start_cmd %q are not both in the image's prefix /usr/local/kong",
			env["KONG_PLUGINSERVER_KEYGATE_SOCKET"], env["KONG_PLUGINSERVER_KEYGATE_START_CMD"])
	}
	// Safe by default: DB-less, no declarative file, no secret, the image's user.
	if env["KONG_DATABASE"] != "off" || env["KONG_DECLARATIVE_CONFIG"] != "" {
		t.Errorf("KONG_DATABASE=%q KONG_DECLARATIVE_CONFIG=%q", env["KONG_DATABASE"], env["KONG_DECLARATIVE_CONFIG"])
	}
	if strings.Contains(text, "kong.yml") && regexp.MustCompile(`(?m)^COPY .*kong\.yml`).MatchString(text) {
		t.Error("the image copies a kong.yml")
	}
	for name := range env {
		if strings.HasPrefix(name, "KEYGATE_") {
			t.Errorf("the image sets %s", name)
		}
	}
	users := regexp.MustCompile(`(?m)^USER (\S+)`).FindAllStringSubmatch(text, -1)
	if len(users) == 0 || users[len(users)-1][1] != "kong" {
		t.Errorf("the final stage does not end as USER kong: %v", users)
	}
	if !strings.Contains(text, "install -d -o kong") {
		t.Error("no data directory owned by kong")
	}
}

type composeService struct {
	Image       string            `yaml:"image"`
	NetworkMode string            `yaml:"network_mode"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	StopSignal  string            `yaml:"stop_signal"`
}

func composeFile(t *testing.T, name string) map[string]composeService {
	t.Helper()
	raw, err := os.ReadFile("../deploy/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]composeService `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return doc.Services
}

func flagValue(cmd []string, name string) string {
	if i := slices.Index(cmd, name); i >= 0 && i+1 < len(cmd) {
		return cmd[i+1]
	}
	return ""
}

func TestCompose(t *testing.T) {
	t.Parallel()
	svc := composeFile(t, "compose.yml")
	for _, name := range []string{"kong", "sidecar", "db", "upstream"} {
		if _, ok := svc[name]; !ok {
			t.Fatalf("compose.yml has no service %s", name)
		}
	}
	kong, sidecar := svc["kong"], svc["sidecar"]
	// The sidecar on Kong's loopback, where deploy/kong.yml points.
	if sidecar.NetworkMode != "service:kong" || sidecar.Image != kong.Image {
		t.Errorf("sidecar: network_mode %q image %q", sidecar.NetworkMode, sidecar.Image)
	}
	listen := flagValue(sidecar.Command, "--listen")
	yml, err := os.ReadFile("../deploy/kong.yml")
	if err != nil {
		t.Fatal(err)
	}
	urls := regexp.MustCompile(`(?m)^\s*(?:url|sidecar_url): (\S+) # sidecar$`).FindAllStringSubmatch(string(yml), -1)
	if len(urls) < 3 {
		t.Fatalf("deploy/kong.yml marks %d sidecar URLs, want the service and both enforce routes", len(urls))
	}
	for _, u := range urls {
		if u[1] != "http://"+listen {
			t.Errorf("deploy/kong.yml sidecar URL %s, the sidecar listens on %s", u[1], listen)
		}
	}
	if !strings.HasPrefix(listen, "127.0.0.1:") {
		t.Errorf("the sidecar listens on %s, not Kong's loopback", listen)
	}
	if sidecar.StopSignal != "SIGTERM" {
		t.Errorf("sidecar stop_signal %q: the image's SIGQUIT would not drain it", sidecar.StopSignal)
	}
	// Kong reads the mounted deploy/kong.yml.
	if !slices.Contains(kong.Volumes, "./kong.yml:"+kong.Environment["KONG_DECLARATIVE_CONFIG"]+":ro") {
		t.Errorf("KONG_DECLARATIVE_CONFIG %q is not where ./kong.yml is mounted: %v", kong.Environment["KONG_DECLARATIVE_CONFIG"], kong.Volumes)
	}
	// Secrets only as required ${…} references, never written here.
	for name, s := range svc {
		for k, v := range s.Environment {
			if regexp.MustCompile(`SECRET|TOKEN|PASSWORD`).MatchString(k) && !regexp.MustCompile(`^\$\{[A-Z_]+:[?-]`).MatchString(v) {
				t.Errorf("%s: %s is not taken from deploy/.env: %q", name, k, v)
			}
		}
	}
	// Plain HTTP only on the host's loopback.
	for _, p := range kong.Ports {
		if strings.HasSuffix(p, ":8000") && !strings.HasPrefix(p, "127.0.0.1:") {
			t.Errorf("plain HTTP published beyond loopback: %s", p)
		}
	}

	// The e2e overlay: the sidecar reachable on the host's loopback only.
	e2e := composeFile(t, "compose.e2e.yml")
	if got := flagValue(e2e["sidecar"].Command, "--listen"); got != "0.0.0.0:8080" {
		t.Errorf("compose.e2e.yml sidecar --listen %s", got)
	}
	if !slices.Contains(e2e["kong"].Ports, "127.0.0.1:8080:8080") {
		t.Errorf("compose.e2e.yml kong ports %v", e2e["kong"].Ports)
	}
	if flagValue(e2e["sidecar"].Command, "--store") != flagValue(sidecar.Command, "--store") {
		t.Error("compose.e2e.yml runs the sidecar on another store")
	}
}
