package main

import "testing"

// keysPath is the demo workspace's api-keys collection.
var keysPath = "/web/v1/workspaces/" + workspace + "/api-keys"

// startStack starts the demo stack (sidecar, kongemu with the keygate
// plugin, upstream) for one test; it is stopped when the test ends.
func startStack(t *testing.T) *stack {
	t.Helper()
	s, err := newStack("../..")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	return s
}

// portal is the headers of a call through the gateway's manage route: a
// JWT of user with role in ws, and the portal's access code.
func portal(user, ws, role, code string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + mintJWT(user, ws, role), "X-PORTAL-ACCESS-CODE": code}
}
