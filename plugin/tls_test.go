package plugin

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/keygate/keygate/internal/envelope"
	"github.com/keygate/keygate/internal/testcert"
	"github.com/keygate/keygate/sidecar"
	"github.com/keygate/keygate/store"
)

// TestEnforceOverTLS: a real sidecar serving TLS on loopback. The plugin
// verifies keys over https when it trusts the sidecar's CA
// (sidecar_ca_file); it fails closed (503/5030) when it does not — system
// roots without the test CA, or another CA — and never allows.
func TestEnforceOverTLS(t *testing.T) {
	t.Parallel()
	ca, err := testcert.NewCA("plugin test CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := testcert.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile, err := ca.WriteLeaf(dir, "srv", "sidecar")
	if err != nil {
		t.Fatal(err)
	}
	caFile, _ := ca.WriteCA(dir, "ca.pem")
	otherFile, _ := other.WriteCA(dir, "other.pem")
	st, err := store.OpenBolt(filepath.Join(dir, "keygate.db"), store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sidecar.Start(sidecar.Config{
		Listen: "127.0.0.1:0", Store: st, GatewaySecret: []byte(gwSecret), AdminToken: []byte(adminToken),
		TLSCert: certFile, TLSKey: keyFile, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	url := "https://" + srv.Addr().String()
	ep, err := parseSidecarEndpoint(url, caFile)
	if err != nil {
		t.Fatal(err)
	}
	// The admin calls go through the endpoint's own transport: TLS too.
	sc := &realSidecar{http: &http.Client{Transport: ep.httpTransport()}, base: ep.baseURL()}
	k := sc.create(t, "ws1", `{"name":"tls","scopes":["payment:read"]}`)

	e := serve(t, enforceConfig(url, func(c *Config) { c.SidecarCAFile = caFile }), keyRequest(http.Header{"X-Api-Key": {k.Secret}}), "")
	if e.exited() {
		t.Fatalf("valid key over TLS rejected: %d %s", e.ClientRes.Status, e.ClientRes.Body)
	}
	for name, ca := range map[string]string{"system roots": "", "another CA": otherFile} {
		// A key of its own: the first one's facts are in the plugin's cache.
		k := sc.create(t, "ws1", `{"name":"tls","scopes":["payment:read"]}`)
		e := serve(t, enforceConfig(url, func(c *Config) { c.SidecarCAFile = ca }), keyRequest(http.Header{"X-Api-Key": {k.Secret}}), "")
		if !e.exited() {
			t.Fatalf("%s: allowed by a sidecar whose certificate it cannot verify", name)
		}
		wantReject(t, e, envelope.Unavailable)
	}
	// Plain http to the TLS port gets no verify answer either.
	k = sc.create(t, "ws1", `{"name":"tls","scopes":["payment:read"]}`)
	e = serve(t, enforceConfig("http://"+srv.Addr().String()), keyRequest(http.Header{"X-Api-Key": {k.Secret}}), "")
	wantReject(t, e, envelope.Unavailable)
}
