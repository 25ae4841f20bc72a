package sidecar_test

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/keygate/keygate/api"
	"github.com/keygate/keygate/internal/envelope"
)

// GET /openapi.yaml serves the embedded document, and the document is a valid
// OpenAPI 3.1 description (do validates the response against it as well).
func TestOpenAPIServed(t *testing.T) {
	t.Parallel()
	h := start(t)
	r := h.do("GET", "/openapi.yaml", "", "")
	if r.status != 200 || r.header.Get("Content-Type") != "application/yaml" || !bytes.Equal(r.raw, api.Spec) {
		t.Fatalf("GET /openapi.yaml: %d %q, %d bytes (embedded: %d)", r.status, r.header.Get("Content-Type"), len(r.raw), len(api.Spec))
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(r.raw)
	if err != nil {
		t.Fatalf("load served document: %v", err)
	}
	if doc.OpenAPI != "3.1.0" || !doc.IsOpenAPI31OrLater() {
		t.Fatalf("openapi = %q, want 3.1.0", doc.OpenAPI)
	}
	if err := doc.Validate(loader.Context, openapi3.EnableExamplesValidation()); err != nil {
		t.Fatalf("served document is not valid OpenAPI 3.1: %v", err)
	}
	h.expect(h.do("POST", "/openapi.yaml", "", ""), envelope.MethodNotAllowed)
}

// The plain-text operations endpoints and the console answer as documented
// (do validates every response).
func TestOperationsEndpoints(t *testing.T) {
	t.Parallel()
	h := start(t)
	for path, want := range map[string]string{"/healthz": "ok\n", "/readyz": "ready\n", "/metrics": "# HELP "} {
		r := h.do("GET", path, "", "")
		if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") || !strings.HasPrefix(string(r.raw), want) {
			t.Fatalf("GET %s: %d %q %q", path, r.status, r.header.Get("Content-Type"), r.raw)
		}
	}
	h.expect(h.do("GET", "/healthz", "", `{"x":"`+strings.Repeat("a", 65<<10)+`"}`), envelope.TooLarge)
	for _, path := range []string{"/console/", "/console/index.html", "/console/console.js", "/console/console.css"} {
		if r := h.do("GET", path, "", ""); r.status != 200 {
			t.Fatalf("GET %s: %d", path, r.status)
		}
	}
	h.expect(h.do("GET", "/console/nope.js", "", ""), envelope.NotFound)
	h.expect(h.do("DELETE", "/console/", "", ""), envelope.MethodNotAllowed)
}

// The document lists every code of the envelope table and every route the
// sidecar serves, and nothing else.
func TestOpenAPICoversTheAPI(t *testing.T) {
	t.Parallel()
	c, err := contract()
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	for _, c := range envelope.Codes() {
		codes = append(codes, string(c))
	}
	var documented []string
	for _, v := range c.doc.Components.Schemas["Code"].Value.Enum {
		documented = append(documented, fmt.Sprint(v))
	}
	slices.Sort(codes)
	slices.Sort(documented)
	if !slices.Equal(codes, documented) {
		t.Fatalf("Code enum = %v, envelope codes = %v", documented, codes)
	}
	want := []string{
		"DELETE /web/v1/workspaces/{workspaceId}/api-keys/{apiKeyId}",
		"GET /console",
		"GET /console/",
		"GET /console/{file}",
		"GET /healthz",
		"GET /internal/v1/invalidations",
		"GET /metrics",
		"GET /openapi.yaml",
		"GET /readyz",
		"GET /web/v1/workspaces/{workspaceId}/api-key-events",
		"GET /web/v1/workspaces/{workspaceId}/api-keys",
		"GET /web/v1/workspaces/{workspaceId}/api-keys/{apiKeyId}",
		"POST /internal/v1/verify",
		"POST /web/v1/workspaces/{workspaceId}/api-keys",
		"POST /web/v1/workspaces/{workspaceId}/api-keys/{apiKeyId}/roll",
	}
	var got []string
	for path, item := range c.doc.Paths.Map() {
		for method := range item.Operations() {
			got = append(got, method+" "+path)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("operations = %v\nwant %v", got, want)
	}
}
