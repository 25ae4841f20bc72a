package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/keygate/keygate/internal/testcert"
	"github.com/keygate/keygate/plugin"
	"github.com/keygate/keygate/store/storetest"
)

// The environment of a run against a gateway started elsewhere (see doc.go).
const (
	envGateway      = "KEYGATE_E2E_GATEWAY_URL"
	envSidecar      = "KEYGATE_E2E_SIDECAR_URL"
	envAdminToken   = "KEYGATE_E2E_ADMIN_TOKEN"
	envJWTSecret    = "KEYGATE_E2E_JWT_SECRET"
	envPublicCode   = "KEYGATE_E2E_PUBLIC_CODE"
	envPartnerCode  = "KEYGATE_E2E_PARTNER_CODE"
	envWorkspace    = "KEYGATE_E2E_WORKSPACE"
	envStopSidecar  = "KEYGATE_E2E_STOP_SIDECAR"
	envStartSidecar = "KEYGATE_E2E_START_SIDECAR"
)

// The token material and workspace of the run. For a stack started here
// they are fresh random values written into the copy of kong/kong.yml; for
// an external gateway they come from the environment.
var (
	jwtSecret, publicCode, partnerCode string
	workspace                          = "ws_demo"
	keysPath                           string
	external                           bool
)

// demo values of kong/kong.yml that the local stack replaces (the plugin
// refuses them).
const (
	demoJWTSecret   = plugin.DemoJWTSecret
	demoPartnerCode = plugin.DemoPartnerCode
	demoPublicCode  = plugin.DemoPublicCode
)

func TestMain(m *testing.M) {
	if err := setup(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// setup reads the environment: all of gateway, sidecar, admin token, JWT
// secret and portal codes, or none of them (then each test starts its own
// stack through kongemu).
func setup() error {
	names := []string{envGateway, envSidecar, envAdminToken, envJWTSecret, envPublicCode, envPartnerCode}
	var set, unset []string
	for _, n := range names {
		if os.Getenv(n) != "" {
			set = append(set, n)
		} else {
			unset = append(unset, n)
		}
	}
	switch {
	case len(set) == 0:
		jwtSecret, publicCode, partnerCode = randomSecret(), "public-"+randomSecret(), "partner-"+randomSecret()
	case len(unset) > 0:
		return fmt.Errorf("%s set but %s not: set all or none of them", strings.Join(set, ", "), strings.Join(unset, ", "))
	default:
		external = true
		jwtSecret, publicCode, partnerCode = os.Getenv(envJWTSecret), os.Getenv(envPublicCode), os.Getenv(envPartnerCode)
		// A fresh workspace per run, so that runs against one database do
		// not see each other's keys.
		workspace = "ws_e2e_" + randomSecret()[:12]
	}
	if w := os.Getenv(envWorkspace); w != "" {
		workspace = w
	}
	keysPath = "/web/v1/workspaces/" + workspace + "/api-keys"
	return nil
}

// stack is the gateway under test: either processes started here (kongemu
// running the real keygate plugin, the sidecar on bbolt, the example
// upstream) or an external gateway and sidecar named by the environment.
type stack struct {
	// sidecarCA, when set, is the CA of a sidecar serving TLS (withTLS).
	sidecarCA                *testcert.CA
	dir, gateway, sidecarURL string
	adminToken               string
	procs                    []*exec.Cmd
	sidecar, kongemu         *exec.Cmd
	sidecarArgs              []string
	env                      []string
	// proxy, when the stack was started with one, stands between the
	// gateway and the sidecar (every call of the plugin and of Kong's
	// proxying goes through it); tests reach the sidecar directly.
	proxy *storetest.PGProxy
}

// startStack returns the gateway for one test: the external one when the
// environment names it, else a stack started for the test and stopped when
// it ends.
func startStack(t *testing.T, opts ...stackOption) *stack {
	t.Helper()
	if external && len(opts) > 0 {
		t.Skip("against an external gateway: this test starts a stack of its own shape")
	}
	if external {
		return &stack{gateway: strings.TrimRight(os.Getenv(envGateway), "/"), sidecarURL: strings.TrimRight(os.Getenv(envSidecar), "/"),
			adminToken: os.Getenv(envAdminToken)}
	}
	s, err := newStack("..", nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	return s
}

// startProxiedStack is startStack with a TCP proxy between the gateway and
// the sidecar (stack.proxy), which the test can stall or take down. Never
// against an external gateway.
func startProxiedStack(t *testing.T) *stack {
	t.Helper()
	if external {
		t.Skip("a proxy between gateway and sidecar: local stack only")
	}
	var proxy *storetest.PGProxy
	s, err := newStack("..", func(sidecarAddr string) string {
		p, via := storetest.NewPGProxy(t, "http://"+sidecarAddr)
		proxy = p
		return strings.TrimPrefix(via, "http://")
	})
	if err != nil {
		t.Fatal(err)
	}
	s.proxy = proxy
	t.Cleanup(s.stop)
	return s
}

// stackOption changes how newStack starts the stack.
type stackOption func(*stackOpts)

type stackOpts struct {
	tls, handover bool
	// jwksURL and jwksCA: the manage route verifies RS256 owner tokens
	// against this JWKS instead of the HS256 secret, trusting jwksCA (a PEM
	// file) through SSL_CERT_FILE, listed in nginx_main_env.
	jwksURL, jwksCA string
}

// withJWKS points the manage route at a JWKS (see stackOpts).
func withJWKS(url, caFile string) stackOption {
	return func(o *stackOpts) { o.jwksURL, o.jwksCA = url, caFile }
}

// withConsoleHandover starts the sidecar with --console-handover, as the
// demo does: the console reads a token from its URL fragment.
func withConsoleHandover(o *stackOpts) { o.handover = true }

// withTLS runs the sidecar with --tls-cert/--tls-key (a CA of the test's
// own): the plugin reaches it at an https sidecar_url trusting that CA
// through sidecar_ca_file, and kongemu proxies the management routes to it
// over https (trusting the CA through SSL_CERT_FILE, which the plugin, as
// in Kong, does not inherit).
func withTLS(o *stackOpts) { o.tls = true }

// newStack builds the binaries and starts sidecar, upstream and kongemu on
// free loopback ports with a copy of kong/kong.yml pointing at them, its
// demo JWT secret and portal codes replaced by this run's. via, when not
// nil, returns the address the gateway reaches the sidecar at instead of
// the sidecar's own.
func newStack(repo string, via func(sidecarAddr string) string, options ...stackOption) (s *stack, err error) {
	var o stackOpts
	for _, opt := range options {
		opt(&o)
	}
	dir, err := os.MkdirTemp("", "keygate-e2e")
	if err != nil {
		return nil, err
	}
	s = &stack{dir: dir}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	for _, pkg := range []string{"./cmd/keygate", "./cmd/keygate-sidecar", "./cmd/kongemu", "./examples/upstream"} {
		out, err := exec.Command("go", "build", "-C", repo, "-o", filepath.Join(dir, "bin")+"/", pkg).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	sidecarAddr, upstreamAddr, gatewayAddr := freePort(), freePort(), freePort()
	s.gateway, s.sidecarURL = "http://"+gatewayAddr, "http://"+sidecarAddr
	gatewaySide := sidecarAddr
	if via != nil {
		gatewaySide = via(sidecarAddr)
	}
	yml, err := os.ReadFile(filepath.Join(repo, "kong", "kong.yml"))
	if err != nil {
		return nil, err
	}
	var tlsArgs []string
	if o.tls {
		if tlsArgs, err = s.setupTLS(&yml); err != nil {
			return nil, err
		}
		s.sidecarURL = "https://" + sidecarAddr
	}
	for _, r := range [][2]string{{"127.0.0.1:8080", gatewaySide}, {"127.0.0.1:9090", upstreamAddr},
		{demoJWTSecret, jwtSecret}, {demoPartnerCode, partnerCode}, {demoPublicCode, publicCode}} {
		if !bytes.Contains(yml, []byte(r[0])) {
			return nil, fmt.Errorf("kong/kong.yml no longer contains %q", r[0])
		}
		yml = bytes.ReplaceAll(yml, []byte(r[0]), []byte(r[1]))
	}
	if o.jwksURL != "" {
		re := regexp.MustCompile(`jwt_algorithms:\n(\s+)- HS256\n(\s+)jwt_secret: \S+`)
		if !re.Match(yml) {
			return nil, fmt.Errorf("kong/kong.yml: no HS256 manage route to point at a JWKS")
		}
		yml = re.ReplaceAll(yml, []byte("jwt_algorithms:\n${1}- RS256\n${2}jwks_url: "+o.jwksURL))
	}
	if err := os.WriteFile(filepath.Join(dir, "kong.yml"), yml, 0o600); err != nil {
		return nil, err
	}
	s.adminToken = randomSecret()
	s.env = []string{"KEYGATE_GATEWAY_SECRET=" + randomSecret(), "KEYGATE_ADMIN_TOKEN=" + s.adminToken}
	s.sidecarArgs = append([]string{"--listen", sidecarAddr, "--db", filepath.Join(dir, "data", "keygate.db")}, tlsArgs...)
	if o.tls {
		s.env = append(s.env, "SSL_CERT_FILE="+filepath.Join(dir, "ca.pem"))
	}
	if o.handover {
		s.sidecarArgs = append(s.sidecarArgs, "--console-handover")
	}
	if s.sidecar, err = s.start("keygate-sidecar", "sidecar", s.sidecarArgs...); err != nil {
		return nil, err
	}
	if _, err := s.start("upstream", "upstream", "--listen", upstreamAddr); err != nil {
		return nil, err
	}
	// kong/kong.conf as an operator adapts it to this node: the binary's
	// path, a prefix of its own, and the local client trusted as a proxy
	// so that tests can set the client address with X-Forwarded-For.
	conf, err := os.ReadFile(filepath.Join(repo, "kong", "kong.conf"))
	if err != nil {
		return nil, err
	}
	conf = bytes.ReplaceAll(conf, []byte("/usr/local/bin/keygate"), []byte(filepath.Join(dir, "bin", "keygate")))
	conf = bytes.ReplaceAll(conf, []byte("/usr/local/kong"), []byte(dir))
	conf = append(conf, "\ntrusted_ips = 127.0.0.1\nreal_ip_header = X-Forwarded-For\n"...)
	if o.jwksCA != "" {
		// The plugin sees only what nginx_main_env lists.
		conf = bytes.Replace(conf, []byte("nginx_main_env = KEYGATE_GATEWAY_SECRET;"), []byte("nginx_main_env = KEYGATE_GATEWAY_SECRET; env SSL_CERT_FILE;"), 1)
		s.env = append(s.env, "SSL_CERT_FILE="+o.jwksCA)
	}
	if err := os.WriteFile(filepath.Join(dir, "kong.conf"), conf, 0o600); err != nil {
		return nil, err
	}
	if s.kongemu, err = s.start("kongemu", "kongemu", "--config", filepath.Join(dir, "kong.yml"), "--conf", filepath.Join(dir, "kong.conf"),
		"--listen", gatewayAddr, "--prefix", dir, "--expose-pdk-calls"); err != nil {
		return nil, err
	}
	for _, u := range []string{s.sidecarURL + "/readyz", "http://" + upstreamAddr + "/", s.gateway + "/"} {
		if err := waitHTTPWith(s.http(), u, 0); err != nil {
			return nil, fmt.Errorf("%w (logs in %s)", err, dir)
		}
	}
	return s, nil
}

func (s *stack) start(name string, logName string, args ...string) (*exec.Cmd, error) {
	cmd := exec.Command(filepath.Join(s.dir, "bin", name), args...)
	cmd.Env = append(os.Environ(), s.env...)
	f, err := os.Create(filepath.Join(s.dir, logName+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s.procs = append(s.procs, cmd)
	return cmd, nil
}

func (s *stack) stop() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		p := s.procs[i]
		if p.Process != nil && p.ProcessState == nil {
			p.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { p.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				p.Process.Kill()
			}
		}
	}
	os.RemoveAll(s.dir)
}

// canRestartSidecar skips the rest of the test when the sidecar cannot be
// stopped and started: an external gateway without the two commands.
func (s *stack) canRestartSidecar(t *testing.T) {
	t.Helper()
	if external && (os.Getenv(envStopSidecar) == "" || os.Getenv(envStartSidecar) == "") {
		t.Skipf("against an external gateway: set %s and %s to stop and start its sidecar", envStopSidecar, envStartSidecar)
	}
}

// setupTLS writes the sidecar's certificate, key and CA into the stack's
// directory, points the copy of kong.yml at an https sidecar trusting that
// CA, and returns the sidecar's TLS flags.
func (s *stack) setupTLS(yml *[]byte) ([]string, error) {
	ca, err := testcert.NewCA("keygate e2e CA")
	if err != nil {
		return nil, err
	}
	certFile, keyFile, err := ca.WriteLeaf(s.dir, "sidecar", "keygate-sidecar")
	if err != nil {
		return nil, err
	}
	caFile, err := ca.WriteCA(s.dir, "ca.pem")
	if err != nil {
		return nil, err
	}
	s.sidecarCA = ca
	y := bytes.ReplaceAll(*yml, []byte("http://127.0.0.1:8080"), []byte("https://127.0.0.1:8080"))
	// Each sidecar_url line gets a sidecar_ca_file line at its indentation.
	y = regexp.MustCompile(`(?m)^(\s+)sidecar_url: (.*)$`).ReplaceAll(y, []byte("${1}sidecar_url: $2\n${1}sidecar_ca_file: "+caFile))
	if !bytes.Contains(y, []byte("sidecar_ca_file")) {
		return nil, fmt.Errorf("kong/kong.yml names no sidecar_url")
	}
	*yml = y
	return []string{"--tls-cert", certFile, "--tls-key", keyFile}, nil
}

// http is a client for the sidecar: it trusts the sidecar's CA when the
// sidecar serves TLS.
func (s *stack) http() *http.Client {
	if s.sidecarCA == nil {
		return http.DefaultClient
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.sidecarCA.Pool()}}}
}

// stopSidecar stops the sidecar (SIGTERM here, $KEYGATE_E2E_STOP_SIDECAR
// for an external one) and waits for it.
func (s *stack) stopSidecar(t *testing.T) {
	t.Helper()
	if external {
		shell(t, os.Getenv(envStopSidecar))
		return
	}
	s.sidecar.Process.Signal(syscall.SIGTERM)
	s.sidecar.Wait()
}

// restartSidecar starts the sidecar again (same port and data) and waits
// until it is ready.
func (s *stack) restartSidecar(t *testing.T) {
	t.Helper()
	if external {
		shell(t, os.Getenv(envStartSidecar))
	} else {
		var err error
		if s.sidecar, err = s.start("keygate-sidecar", "sidecar-restarted", s.sidecarArgs...); err != nil {
			t.Fatal(err)
		}
	}
	if err := waitHTTPWith(s.http(), s.sidecarURL+"/readyz", 200); err != nil {
		t.Fatal(err)
	}
}

func shell(t *testing.T, command string) {
	t.Helper()
	if out, err := exec.Command("sh", "-c", command).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", command, err, out)
	}
}

func freePort() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func randomSecret() string {
	b := make([]byte, 24)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func waitHTTPWith(c *http.Client, url string, want int) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if res, err := c.Get(url); err == nil {
			res.Body.Close()
			if want == 0 || res.StatusCode == want {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer in time", url)
}

// mintJWT signs an HS256 token of sub with role in ws, valid for an hour.
func mintJWT(sub, ws, role string) string {
	now := time.Now()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": sub, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"workspaces": map[string]string{ws: role},
	}).SignedString([]byte(jwtSecret))
	if err != nil {
		panic(err)
	}
	return tok
}

// portal is the headers of a call through the gateway's manage route: a
// JWT of user with role in ws, and the portal's access code.
func portal(user, ws, role, code string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + mintJWT(user, ws, role), "X-PORTAL-ACCESS-CODE": code}
}

// consoleURL opens the owner console through the gateway and hands it the
// owner's token, the workspace and the portal access code in the URL
// fragment (as `go run ./examples/demo -keep` prints it).
func consoleURL(gateway, ownerJWT string) string {
	f := url.Values{"token": {ownerJWT}, "workspace": {workspace}, "portalCode": {partnerCode}, "portal": {"PARTNER"}}
	return gateway + "/console/#" + f.Encode()
}

type result struct {
	status int
	header http.Header
	body   []byte
	json   map[string]any
	data   map[string]any
}

func (s *stack) call(method, path string, headers map[string]string, body string) result {
	req, _ := http.NewRequest(method, s.gateway+path, strings.NewReader(body))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	client := http.Client{Timeout: 10 * time.Second}
	res, err := client.Do(req)
	if err != nil {
		return result{status: 0, json: map[string]any{"message": err.Error()}}
	}
	defer res.Body.Close()
	return readResult(res)
}

func readResult(res *http.Response) result {
	raw, _ := io.ReadAll(res.Body)
	r := result{status: res.StatusCode, header: res.Header, body: raw}
	json.Unmarshal(raw, &r.json)
	r.data, _ = r.json["data"].(map[string]any)
	return r
}

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

func first(v any) string {
	if l, ok := v.([]any); ok && len(l) > 0 {
		return fmt.Sprint(l[0])
	}
	return "(absent)"
}
