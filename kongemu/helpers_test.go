package kongemu

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/kongemu/kongemutest"
)

// pluginBin is testdata/testplugin, built once by TestMain.
var pluginBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kongemu-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginBin = filepath.Join(dir, "testplugin")
	cmd := exec.Command("go", "build", "-o", pluginBin, "./testdata/testplugin")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build testplugin: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// echoed is what the upstream saw.
type echoed struct {
	Method  string
	Path    string // escaped
	Query   string
	Host    string
	Body    string
	Header  http.Header
	Request string
}

// upstream is a real HTTP server that echoes requests as JSON. A request
// with X-Sleep waits that long first.
type upstream struct {
	*httptest.Server
	hits atomic.Int64
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		if d, err := time.ParseDuration(r.Header.Get("X-Sleep")); err == nil {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Upstream", "echo")
		json.NewEncoder(w).Encode(echoed{
			Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Host: r.Host,
			Body: string(body), Header: r.Header, Request: r.RequestURI,
		})
	}))
	t.Cleanup(u.Close)
	return u
}

type emu struct {
	base   string
	logs   *kongemutest.LogBuffer
	yml    string        // the declarative config file
	reload chan struct{} // Config.Reload
}

// startEmu runs kongemu in process with the test plugin and the given
// declarative config; it is stopped (and checked to stop cleanly) at the
// end of the test.
func startEmu(t *testing.T, yml string, mod func(*Config)) *emu {
	t.Helper()
	e, err := tryStartEmu(t, yml, mod)
	if err != nil {
		t.Fatalf("kongemu did not start: %v\nlogs:\n%s", err, e.logs)
	}
	return e
}

func tryStartEmu(t *testing.T, yml string, mod func(*Config)) (*emu, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kong.yml")
	if err := os.WriteFile(path, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reload := make(chan struct{})
	cfg := Config{ConfigPath: path, PluginPath: pluginBin, Listener: ln, ExposePDKCalls: true, Reload: reload}
	if mod != nil {
		mod(&cfg)
	}
	logs := &kongemutest.LogBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, logger) }()
	e := &emu{base: "http://" + cfg.Listener.Addr().String(), logs: logs, yml: path, reload: reload}

	ready := make(chan error, 1)
	go func() {
		c := &http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get(e.base + "/__kongemu_ready")
		if err == nil {
			resp.Body.Close()
		}
		ready <- err
	}()
	select {
	case err := <-done:
		cancel()
		return e, fmt.Errorf("Run returned early: %v", err)
	case err := <-ready:
		if err != nil {
			cancel()
			if rerr := <-done; rerr != nil {
				return e, fmt.Errorf("Run returned early: %v", rerr)
			}
			return e, err
		}
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
	return e, nil
}

type result struct {
	status int
	header http.Header
	body   []byte
	echo   *echoed
}

func (e *emu) do(t *testing.T, method, path string, hdr map[string]string) result {
	t.Helper()
	req, err := http.NewRequest(method, e.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	return doReq(t, http.DefaultClient, req)
}

func doReq(t *testing.T, c *http.Client, req *http.Request) result {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	return readResult(t, resp)
}

// doDecode is what the upstream saw of a response read by hand.
func doDecode(t *testing.T, resp *http.Response) *echoed {
	t.Helper()
	res := readResult(t, resp)
	if res.echo == nil {
		t.Fatalf("status %d: %s", res.status, res.body)
	}
	return res.echo
}

func readResult(t *testing.T, resp *http.Response) result {
	t.Helper()
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	res := result{status: resp.StatusCode, header: resp.Header, body: body}
	if resp.Header.Get("X-Upstream") == "echo" {
		res.echo = &echoed{}
		if err := json.Unmarshal(body, res.echo); err != nil {
			t.Fatalf("decode echo: %v: %s", err, body)
		}
	}
	return res
}

// kongConf parses kong.conf text, as an operator would write it.
func kongConf(t *testing.T, text string) *KongConf {
	t.Helper()
	c, err := ParseKongConf([]byte(text), nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func fill(tmpl string, kv ...string) string {
	return strings.NewReplacer(kv...).Replace(tmpl)
}
