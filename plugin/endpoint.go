package plugin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// sidecarEndpoint is a parsed sidecar_url, with sidecar_ca_file: where the
// key service is and how to reach it.
//
// Every connection the plugin opens to the sidecar — the verify client
// (verify.go) and any other, such as a long-lived subscription stream —
// must be opened with the endpoint's dial (or the http.Transport of
// httpTransport), never with a dialer of its own: that is what makes TLS
// cover all of them, so that the gateway secret in their Authorization
// header never crosses the network in clear.
type sidecarEndpoint struct {
	network string      // "tcp" or "unix"
	addr    string      // host:port, or the socket path
	host    string      // the Host header: host:port, or "keygate-sidecar" on a socket
	tls     *tls.Config // https://; nil for http:// (loopback only) and unix:
}

// scheme is the URL scheme of requests to the endpoint.
func (e *sidecarEndpoint) scheme() string {
	if e.tls != nil {
		return "https"
	}
	return "http"
}

// dial opens one connection to the sidecar, with the TLS handshake done
// (server certificate verified) when the endpoint is https, all within ctx.
func (e *sidecarEndpoint) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, e.network, e.addr)
	if err != nil || e.tls == nil {
		return c, err
	}
	tc := tls.Client(c, e.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("TLS handshake with the sidecar %s: %w", e.addr, err)
	}
	return tc, nil
}

// dialTimeout is dial with a timeout (fasthttp's DialTimeout hook).
func (e *sidecarEndpoint) dialTimeout(timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return e.dial(ctx)
}

// httpTransport is a net/http transport whose every connection goes to the
// endpoint through dial (TLS included), whatever host a request URL names;
// requests should use baseURL. For a client of the sidecar other than the
// verify one (e.g. a stream of invalidations).
func (e *sidecarEndpoint) httpTransport() *http.Transport {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) { return e.dial(ctx) }
	return &http.Transport{
		Proxy:               nil,
		DialContext:         dial,
		DialTLSContext:      dial,
		ForceAttemptHTTP2:   false,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
}

// baseURL is the scheme and host to put before a path in a request URL.
func (e *sidecarEndpoint) baseURL() string { return e.scheme() + "://" + e.host }

// parseSidecarEndpoint reads sidecar_url and sidecar_ca_file:
//
//   - "unix:/abs/path.sock": a local socket, no TLS;
//   - "http://host:port": plain HTTP, only to a loopback host (localhost,
//     127.0.0.0/8, ::1): elsewhere the gateway secret would cross the
//     network in clear, so it is refused here, at config time;
//   - "https://host:port": TLS 1.2 or later, the sidecar's certificate
//     verified for host against sidecar_ca_file (PEM) or, when that is
//     empty, the system roots.
//
// No path, query, fragment or user info; the port is required.
func parseSidecarEndpoint(raw, caFile string) (*sidecarEndpoint, error) {
	if path, ok := strings.CutPrefix(raw, "unix:"); ok {
		if !strings.HasPrefix(path, "/") || len(path) < 2 {
			return nil, fmt.Errorf("sidecar_url %q: unix socket path must be absolute (unix:/path.sock)", raw)
		}
		if caFile != "" {
			return nil, fmt.Errorf("sidecar_ca_file is only for an https:// sidecar_url, not %q", raw)
		}
		return &sidecarEndpoint{network: "unix", addr: path, host: "keygate-sidecar"}, nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		shown := raw
		if err == nil && u.User != nil {
			shown = u.Redacted() // the refusal reaches Kong's log: never a password
		}
		return nil, fmt.Errorf("sidecar_url %q must be https://host:port, http://127.0.0.1:port (loopback only) or unix:/path.sock", shown)
	}
	port := u.Port()
	if port == "" {
		return nil, fmt.Errorf("sidecar_url %q must name a port", raw)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("sidecar_url %q: port out of range", raw)
	}
	e := &sidecarEndpoint{network: "tcp", addr: u.Host, host: u.Host}
	if u.Scheme == "http" {
		if !isLoopbackHost(u.Hostname()) {
			return nil, fmt.Errorf("sidecar_url %q: plain http is refused to %s, which is not a loopback address: "+
				"the gateway secret would cross the network in clear; use https:// (trusting sidecar_ca_file) or a unix: socket", raw, u.Hostname())
		}
		if caFile != "" {
			return nil, fmt.Errorf("sidecar_ca_file is only for an https:// sidecar_url, not %q", raw)
		}
		return e, nil
	}
	e.tls = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.Hostname(), NextProtos: []string{"http/1.1"}}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("sidecar_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("sidecar_ca_file %s holds no PEM certificate", caFile)
		}
		e.tls.RootCAs = pool
	}
	return e, nil
}
