package main

import (
	"fmt"
	"io"
)

// handSession creates, uses and revokes a key through the gateway with curl.
// `-keep` prints it after the three variables it needs (handVars), and the
// README's "Try it by hand" shows it verbatim; a test runs what -keep prints
// through bash and checks the README still holds it. No comment lines: an
// interactive zsh would run them as commands.
const handSession = `CREATED=$(curl -sS -w '\nHTTP %{http_code}' -X POST "$GATEWAY/web/v1/workspaces/ws_demo/api-keys" \
  -H "Authorization: Bearer $OWNER_JWT" -H "$PORTAL" -H 'Content-Type: application/json' \
  -d '{"name":"My first key","scopes":["orders:read"]}'); printf '%s\n' "$CREATED"
KEY_ID=$(printf '%s' "$CREATED" | sed -n 's/.*"apiKeyId":"\([^"]*\)".*/\1/p')
SECRET=$(printf '%s' "$CREATED" | sed -n 's/.*"secret":"\([^"]*\)".*/\1/p')
curl -sS -w '\nHTTP %{http_code}\n' "$GATEWAY/orders/42" -H "X-API-Key: $SECRET"
curl -sS -w '\nHTTP %{http_code}\n' -X DELETE "$GATEWAY/web/v1/workspaces/ws_demo/api-keys/$KEY_ID" \
  -H "Authorization: Bearer $OWNER_JWT" -H "$PORTAL"
sleep 1; curl -sS -w '\nHTTP %{http_code}\n' "$GATEWAY/orders/42" -H "X-API-Key: $SECRET"
`

// Markers around the block -keep prints, for people and for the test.
const (
	sessionBegin = "----- paste from here -----"
	sessionEnd   = "----- to here -----"
)

// printSession writes the ready-to-paste lines: the gateway, an owner JWT
// for Alice (signed with kong/kong.yml's development jwt_secret), the
// portal header, then handSession.
func printSession(w io.Writer, gateway, ownerJWT string) {
	fmt.Fprintf(w, "\nTry it by hand: paste these lines into another shell (bash or zsh). They create a key as Alice\n"+
		"(OWNER of %s, token valid 1 h), call the product route with it, revoke it and call again:\n\n%s\n", workspace, sessionBegin)
	fmt.Fprintf(w, "GATEWAY=%s\nOWNER_JWT=%s\nPORTAL='X-PORTAL-ACCESS-CODE: %s'\n", gateway, ownerJWT, publicCode)
	io.WriteString(w, handSession)
	fmt.Fprintf(w, "%s\nExpected: HTTP 201 with the secret (shown once), HTTP 200 from the upstream, HTTP 200 for the\n"+
		"revoke, then HTTP 401 with code 4012 (rejected within 1 s).\n", sessionEnd)
}
