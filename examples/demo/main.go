// Command demo runs keygate's whole path on one machine and narrates it:
// it builds the binaries, starts the sidecar on an embedded bbolt file in a
// temporary directory, the example upstream, and kongemu driving the real
// keygate plugin with kong/kong.yml; then, as a workspace owner, creates an
// API key through the gateway, uses it on the product route, shows every
// rejection, revokes it, and stops everything it started.
//
//	go run ./examples/demo            (make demo)
//	go run ./examples/demo -keep      (leave the stack running; print ready-to-paste curl lines and the owner console URL; Ctrl-C stops it)
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/keygate/keygate/plugin"
)

const workspace = "ws_demo"

// The manage route's JWT secret and portal codes of this run: fresh ones,
// written over kong/kong.yml's public demo values, which the plugin refuses
// (plugin/public.go) so that the file can never run a real node as is.
var (
	jwtSecret   = randomSecret()
	partnerCode = "partner-" + randomSecret()[:16]
	publicCode  = "public-" + randomSecret()[:16]
)

func main() {
	keep := flag.Bool("keep", false, "keep the stack running after the walk-through (Ctrl-C stops it)")
	repo := flag.String("repo", ".", "repository root")
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), `demo runs keygate's whole path on this machine and narrates it: it builds
the binaries, starts the sidecar (bbolt in a temporary directory), the example
upstream and kongemu driving the real keygate plugin with kong/kong.yml, then
creates, uses and revokes an API key through the gateway and shows every
rejection. With -keep the stack stays up and it prints curl lines to paste.

Usage: go run ./examples/demo [-keep] [-repo DIR]

Flags:
`)
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := run(*repo, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

type stack struct {
	dir, gateway, sidecarURL, upstreamURL string
	adminToken                            string
	procs                                 []*exec.Cmd
	sidecar, kongemu                      *exec.Cmd
	sidecarArgs                           []string
	env                                   []string
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

func waitHTTP(url string, want int) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if res, err := http.Get(url); err == nil {
			res.Body.Close()
			if want == 0 || res.StatusCode == want {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer in time", url)
}

// newStack builds the binaries and starts sidecar, upstream and kongemu on
// free loopback ports with a copy of kong/kong.yml pointing at them.
func newStack(repo string) (s *stack, err error) {
	dir, err := os.MkdirTemp("", "keygate-demo")
	if err != nil {
		return nil, err
	}
	s = &stack{dir: dir}
	started := s // s is nil when an error is returned
	defer func() {
		if err != nil {
			started.stop()
		}
	}()
	for _, pkg := range []string{"./cmd/keygate", "./cmd/keygate-sidecar", "./cmd/kongemu", "./examples/upstream"} {
		out, err := exec.Command("go", "build", "-C", repo, "-o", filepath.Join(dir, "bin")+"/", pkg).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	sidecarAddr, upstreamAddr, gatewayAddr := freePort(), freePort(), freePort()
	s.gateway, s.sidecarURL, s.upstreamURL = "http://"+gatewayAddr, "http://"+sidecarAddr, "http://"+upstreamAddr
	// The same kong/kong.yml, with the demo's ports, JWT secret and portal
	// codes.
	yml, err := os.ReadFile(filepath.Join(repo, "kong", "kong.yml"))
	if err != nil {
		return nil, err
	}
	for _, r := range [][2]string{{"127.0.0.1:8080", sidecarAddr}, {"127.0.0.1:9090", upstreamAddr},
		{plugin.DemoJWTSecret, jwtSecret}, {plugin.DemoPartnerCode, partnerCode}, {plugin.DemoPublicCode, publicCode}} {
		if !bytes.Contains(yml, []byte(r[0])) {
			return nil, fmt.Errorf("kong/kong.yml no longer contains %q", r[0])
		}
		yml = bytes.ReplaceAll(yml, []byte(r[0]), []byte(r[1]))
	}
	if err := os.WriteFile(filepath.Join(dir, "kong.yml"), yml, 0o600); err != nil {
		return nil, err
	}
	s.adminToken = randomSecret()
	s.env = []string{"KEYGATE_GATEWAY_SECRET=" + randomSecret(), "KEYGATE_ADMIN_TOKEN=" + s.adminToken}
	// --console-handover: the console URL printed by -keep hands a token
	// over in its fragment; never set it in production.
	s.sidecarArgs = []string{"--listen", sidecarAddr, "--db", filepath.Join(dir, "data", "keygate.db"), "--console-handover"}
	if s.sidecar, err = s.start("keygate-sidecar", "sidecar", s.sidecarArgs...); err != nil {
		return nil, err
	}
	if _, err := s.start("upstream", "upstream", "--listen", upstreamAddr); err != nil {
		return nil, err
	}
	// The same kong/kong.conf, with what an operator changes for this node:
	// the binary's path, a prefix of its own, and the local proxy trusted
	// for X-Forwarded-For (the demo shows an IP whitelist rejection).
	conf, err := demoKongConf(repo, filepath.Join(dir, "bin", "keygate"), dir)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "kong.conf"), conf, 0o600); err != nil {
		return nil, err
	}
	if s.kongemu, err = s.start("kongemu", "kongemu", "--config", filepath.Join(dir, "kong.yml"), "--conf", filepath.Join(dir, "kong.conf"),
		"--listen", gatewayAddr, "--prefix", dir, "--expose-pdk-calls"); err != nil {
		return nil, err
	}
	for _, u := range []string{s.sidecarURL + "/readyz", s.upstreamURL + "/", s.gateway + "/"} {
		if err := waitHTTP(u, 0); err != nil {
			return nil, fmt.Errorf("%w (logs in %s)", err, dir)
		}
	}
	return s, nil
}

// demoKongConf is kong/kong.conf for a node whose plugin binary is bin and
// whose prefix is prefix.
func demoKongConf(repo, bin, prefix string) ([]byte, error) {
	conf, err := os.ReadFile(filepath.Join(repo, "kong", "kong.conf"))
	if err != nil {
		return nil, err
	}
	conf = bytes.ReplaceAll(conf, []byte("/usr/local/bin/keygate"), []byte(bin))
	conf = bytes.ReplaceAll(conf, []byte("/usr/local/kong"), []byte(prefix))
	conf = append(conf, "\ntrusted_ips = 127.0.0.1\nreal_ip_header = X-Forwarded-For\n"...)
	return conf, nil
}

// stopSidecar stops the sidecar (SIGTERM) and waits for it.
func (s *stack) stopSidecar() {
	s.sidecar.Process.Signal(syscall.SIGTERM)
	s.sidecar.Wait()
}

// restartSidecar starts the sidecar again on the same port and file.
func (s *stack) restartSidecar() error {
	var err error
	if s.sidecar, err = s.start("keygate-sidecar", "sidecar-restarted", s.sidecarArgs...); err != nil {
		return err
	}
	return waitHTTP(s.sidecarURL+"/readyz", 200)
}

func run(repo string, keep bool) error {
	step("Building keygate, keygate-sidecar, kongemu and the example upstream; starting the sidecar on an embedded bbolt file, the example upstream and kongemu (Kong's plugin-server protocol)")
	s, err := newStack(repo)
	if err != nil {
		return err
	}
	defer s.stop()
	fmt.Printf("   sidecar %s · upstream %s · gateway %s\n", s.sidecarURL, s.upstreamURL, s.gateway)

	owner := mintJWT("alice", workspace, "OWNER")
	step("Alice, OWNER of " + workspace + ", creates a LIVE key through the gateway (JWT + portal code)")
	r := s.call("POST", "/web/v1/workspaces/"+workspace+"/api-keys", map[string]string{"Authorization": "Bearer " + owner, "X-PORTAL-ACCESS-CODE": publicCode},
		`{"name":"Production Key","scopes":["orders:read","orders:write"],"mode":1,"ipWhitelist":["127.0.0.1","203.0.113.0/24"]}`)
	if r.status != 201 {
		return fmt.Errorf("create: %d %s", r.status, r.body)
	}
	key := r.data["secret"].(string)
	keyID := r.data["apiKeyId"].(string)
	fmt.Printf("   201 apiKeyId=%s secret=%s… (shown once; Cache-Control: %s)\n", keyID, key[:12], r.header.Get("Cache-Control"))

	step("The key opens the product route; the upstream sees who called and never the key")
	r = s.call("GET", "/orders/42", map[string]string{"X-API-Key": key}, "")
	up, _ := r.json["headers"].(map[string]any)
	fmt.Printf("   %d upstream saw X-Api-Key-Id=%v X-Workspace-Id=%v X-Api-Key-Mode=%v X-API-Key=%v (PDK calls: %s)\n", r.status,
		first(up["X-Api-Key-Id"]), first(up["X-Workspace-Id"]), first(up["X-Api-Key-Mode"]), first(up["X-Api-Key"]), r.header.Get("X-Kongemu-Pdk-Calls"))

	step("Rejections")
	other := s.call("POST", "/web/v1/workspaces/"+workspace+"/api-keys", map[string]string{"Authorization": "Bearer " + owner, "X-PORTAL-ACCESS-CODE": publicCode},
		`{"name":"Payments only","scopes":["payments:read"]}`)
	sandbox := s.call("POST", "/web/v1/workspaces/"+workspace+"/api-keys", map[string]string{"Authorization": "Bearer " + owner, "X-PORTAL-ACCESS-CODE": partnerCode},
		`{"name":"Sandbox","scopes":["orders:read"],"mode":2}`)
	cases := []struct {
		what    string
		method  string
		path    string
		headers map[string]string
		body    string
	}{
		{"no key", "GET", "/orders/42", nil, ""},
		{"malformed key", "GET", "/orders/42", map[string]string{"X-API-Key": "sk_live_nope"}, ""},
		{"wrong scope", "GET", "/orders/42", map[string]string{"X-API-Key": str(other.data["secret"])}, ""},
		{"TEST key on a LIVE route", "GET", "/orders/42", map[string]string{"X-API-Key": str(sandbox.data["secret"])}, ""},
		{"client IP outside the whitelist", "GET", "/orders/42", map[string]string{"X-API-Key": key, "X-Forwarded-For": "198.51.100.7"}, ""},
		{"MEMBER tries to create a key", "POST", "/web/v1/workspaces/" + workspace + "/api-keys", map[string]string{"Authorization": "Bearer " + mintJWT("bob", workspace, "MEMBER"), "X-PORTAL-ACCESS-CODE": publicCode}, `{"name":"x"}`},
		{"bad JWT", "GET", "/web/v1/workspaces/" + workspace + "/api-keys", map[string]string{"Authorization": "Bearer not.a.jwt", "X-PORTAL-ACCESS-CODE": publicCode}, ""},
		{"TEST key from the PUBLIC portal", "POST", "/web/v1/workspaces/" + workspace + "/api-keys", map[string]string{"Authorization": "Bearer " + owner, "X-PORTAL-ACCESS-CODE": publicCode}, `{"name":"x","mode":2}`},
		{"unknown portal", "GET", "/web/v1/workspaces/" + workspace + "/api-keys", map[string]string{"Authorization": "Bearer " + owner, "X-PORTAL-ACCESS-CODE": "nope"}, ""},
	}
	for _, c := range cases {
		r := s.call(c.method, c.path, c.headers, c.body)
		fmt.Printf("   %-34s → %d %s %s\n", c.what, r.status, str(r.json["code"]), str(r.json["message"]))
	}
	fmt.Printf("   %-34s → %d TEST key %s accepted (sandbox route)\n", "TEST key on the TEST route",
		s.call("GET", "/sandbox/orders/1", map[string]string{"X-API-Key": str(sandbox.data["secret"])}, "").status, str(sandbox.data["apiKeyId"]))

	step("Alice revokes the key; every gateway node rejects it within 1 s")
	r = s.call("DELETE", "/web/v1/workspaces/"+workspace+"/api-keys/"+keyID, map[string]string{"Authorization": "Bearer " + owner, "X-PORTAL-ACCESS-CODE": publicCode}, "")
	fmt.Printf("   %d status=%v\n", r.status, r.data["status"])
	revokedAt := time.Now()
	for {
		r = s.call("GET", "/orders/42", map[string]string{"X-API-Key": key}, "")
		if r.status == 401 || time.Since(revokedAt) > 3*time.Second {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Printf("   after %s → %d %s %s\n", time.Since(revokedAt).Round(time.Millisecond), r.status, str(r.json["code"]), str(r.json["message"]))

	step("The audit trail of the key")
	r = s.call("GET", "/web/v1/workspaces/"+workspace+"/api-key-events?apiKeyId="+keyID, map[string]string{"Authorization": "Bearer " + owner, "X-PORTAL-ACCESS-CODE": publicCode}, "")
	if items, ok := r.data["items"].([]any); ok {
		for _, it := range items {
			e := it.(map[string]any)
			fmt.Printf("   %v %-8v by %s\n", e["at"], e["action"], actor(e["actor"]))
		}
	}

	step("The sidecar stops: the gateway fails closed")
	s.stopSidecar()
	time.Sleep(1100 * time.Millisecond) // past the plugin's cache bound
	r = s.call("GET", "/orders/42", map[string]string{"X-API-Key": str(other.data["secret"])}, "")
	fmt.Printf("   → %d %s %s\n", r.status, str(r.json["code"]), str(r.json["message"]))

	if keep {
		if err := s.restartSidecar(); err != nil {
			return err
		}
		step("The sidecar is started again for the session below")
		fmt.Printf("\nThe stack is running (gateway %s, logs in %s). Ctrl-C stops it.\n", s.gateway, s.dir)
		printSession(os.Stdout, s.gateway, mintJWT("alice", workspace, "OWNER"))
		fmt.Printf("\nOwner console, as Alice from the PARTNER portal (token valid 1 h; the part after # never leaves the browser,\nand the page removes it from the address bar at once):\n   %s\n", consoleURL(s.gateway, mintJWT("alice", workspace, "OWNER")))
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		<-ctx.Done()
	}
	step("Stopping everything")
	return nil
}

// consoleURL opens the owner console through the gateway and hands it the
// owner's token, the workspace and the portal access code in the URL
// fragment, which browsers do not send to the server; the page reads it
// once and removes it from the URL. portal=PARTNER tells the page that this
// portal may create TEST keys.
func consoleURL(gateway, ownerJWT string) string {
	f := url.Values{"token": {ownerJWT}, "workspace": {workspace}, "portalCode": {partnerCode}, "portal": {"PARTNER"}}
	return gateway + "/console/#" + f.Encode()
}

// actor prints an audit event's actor.
func actor(v any) string {
	a, _ := v.(map[string]any)
	if a["admin"] == true {
		return "the admin"
	}
	return fmt.Sprintf("%v (portal %v)", a["sub"], a["portal"])
}

func step(s string) { fmt.Printf("\n▶ %s\n", s) }

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
	raw, _ := io.ReadAll(res.Body)
	r := result{status: res.StatusCode, header: res.Header, body: raw}
	json.Unmarshal(raw, &r.json)
	r.data, _ = r.json["data"].(map[string]any)
	return r
}
