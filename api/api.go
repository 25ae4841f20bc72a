// Package api holds keygate's API contract: api/openapi.yaml, the OpenAPI 3.1
// description of every endpoint of the sidecar (the management API, verify,
// health, readiness, metrics and the document itself), with the response
// envelope and every outcome code.
//
// Invariants: Spec is the file as committed, byte for byte; the sidecar serves
// it at GET /openapi.yaml, and the sidecar's tests validate every response
// they receive against it, so the document and the code cannot drift apart
// unnoticed.
package api

import _ "embed"

// Spec is the OpenAPI 3.1 document (YAML).
//
//go:embed openapi.yaml
var Spec []byte
