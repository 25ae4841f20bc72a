package e2e

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestEndToEnd drives the whole path through the real binaries and sockets:
// kongemu runs the real keygate plugin over Kong's plugin-server protocol
// with kong/kong.yml, the sidecar stores keys in a real bbolt file.
func TestEndToEnd(t *testing.T) {
	s := startStack(t)
	ws := keysPath
	owner := portal("alice", workspace, "OWNER", publicCode)
	partner := portal("alice", workspace, "OWNER", partnerCode)
	expect := func(r result, status int, code string) {
		t.Helper()
		if r.status != status || str(r.json["code"]) != code {
			t.Fatalf("got %d %s, want %d %s: %s", r.status, str(r.json["code"]), status, code, r.body)
		}
		if status >= 400 && (r.header.Get("Content-Type") != "application/json" || r.json["version"] != "1.3.0" || r.json["success"] != false) {
			t.Fatalf("rejection is not an envelope: %v %s", r.header, r.body)
		}
	}
	pdk := func(r result, want int) {
		t.Helper()
		if external {
			return // only kongemu counts PDK calls
		}
		if got := r.header.Get("X-Kongemu-Pdk-Calls"); got != fmt.Sprint(want) {
			t.Fatalf("PDK calls %s (%s), want %d", got, r.header.Get("X-Kongemu-Pdk-Methods"), want)
		}
	}

	// Owner creates a key through the gateway: the seed's 201 shape.
	r := s.call("POST", ws, owner, `{"name":"Production Key","scopes":["orders:read","payment:write"],"mode":1,"ipWhitelist":["127.0.0.1/32","203.0.113.0/24"]}`)
	expect(r, 201, "2000")
	var fields []string
	for k := range r.data {
		fields = append(fields, k)
	}
	sort.Strings(fields)
	if fmt.Sprint(fields) != "[apiKeyId createdAt ipWhitelist lastUsedAt mode name scopes secret secretHint status]" ||
		r.header.Get("Cache-Control") != "no-store" || r.data["status"] != "ACTIVE" || r.data["mode"] != "LIVE" {
		t.Fatalf("create: %v %s", r.header, r.body)
	}
	if !regexp.MustCompile(`^sk_live_[0-9A-Za-z]{38}$`).MatchString(str(r.data["secret"])) {
		t.Fatalf("secret format: %s", r.body)
	}
	wlKey, wlID := str(r.data["secret"]), str(r.data["apiKeyId"])
	r = s.call("POST", ws, owner, `{"name":"open","scopes":["orders:read"]}`)
	expect(r, 201, "2000")
	openKey := str(r.data["secret"])

	// The key works; the upstream sees who called and not the credential.
	for _, tc := range []struct {
		name   string
		header map[string]string
		calls  int
	}{
		{"X-API-Key, no whitelist", map[string]string{"X-API-Key": openKey}, 4},
		{"Bearer, no whitelist", map[string]string{"Authorization": "Bearer " + openKey}, 4},
		{"whitelisted client", map[string]string{"X-API-Key": wlKey, "X-Forwarded-For": "127.0.0.1"}, 5},
	} {
		r := s.call("GET", "/orders/7", tc.header, "")
		expect(r, 200, "")
		pdk(r, tc.calls)
		up := r.json["headers"].(map[string]any)
		if first(up["X-Api-Key-Mode"]) != "LIVE" || first(up["X-Workspace-Id"]) != workspace || !strings.HasPrefix(first(up["X-Api-Key-Id"]), "sk_live_") ||
			up["X-Api-Key"] != nil || up["Authorization"] != nil {
			t.Fatalf("%s: upstream saw %v", tc.name, up)
		}
	}

	// Rejections on the product route, each with its PDK budget.
	r = s.call("POST", ws, owner, `{"name":"payments","scopes":["payment:read"]}`)
	wrongScope := str(r.data["secret"])
	r = s.call("POST", ws, partner, `{"name":"sandbox","scopes":["orders:read"],"mode":2}`)
	expect(r, 201, "2000") // TEST key from the PARTNER portal
	testKey := str(r.data["secret"])
	bad := []byte(openKey)
	bad[20] ^= 1
	for _, tc := range []struct {
		name   string
		header map[string]string
		status int
		code   string
		calls  int
	}{
		{"no key", nil, 401, "4011", 2},
		{"malformed", map[string]string{"X-API-Key": "sk_live_abc"}, 401, "4012", 2},
		{"bad checksum", map[string]string{"X-API-Key": string(bad)}, 401, "4012", 2},
		{"key in the query string only", nil, 401, "4011", 2},
		{"wrong scope", map[string]string{"X-API-Key": wrongScope}, 403, "4033", 2},
		{"TEST key on LIVE route", map[string]string{"X-API-Key": testKey}, 403, "4035", 2},
		{"client IP outside whitelist", map[string]string{"X-API-Key": wlKey, "X-Forwarded-For": "198.51.100.9"}, 403, "4034", 3},
	} {
		path := "/orders/7"
		if tc.name == "key in the query string only" {
			path += "?apikey=" + openKey
		}
		r := s.call("GET", path, tc.header, "")
		expect(r, tc.status, tc.code)
		pdk(r, tc.calls)
	}
	r = s.call("GET", "/sandbox/orders/1", map[string]string{"X-API-Key": testKey}, "")
	expect(r, 200, "")

	// Management rejections.
	member := portal("bob", workspace, "MEMBER", publicCode)
	expect(s.call("POST", ws, member, `{"name":"x"}`), 403, "4030")
	otherWS := portal("alice", "ws_other", "OWNER", publicCode)
	expect(s.call("GET", ws, otherWS, ""), 403, "4030")
	expect(s.call("GET", ws, map[string]string{"Authorization": "Bearer x.y.z", "X-PORTAL-ACCESS-CODE": publicCode}, ""), 401, "4010")
	expect(s.call("GET", ws, map[string]string{"X-PORTAL-ACCESS-CODE": publicCode}, ""), 401, "4010")
	expect(s.call("GET", ws, map[string]string{"Authorization": owner["Authorization"]}, ""), 403, "4032")
	expect(s.call("POST", ws, owner, `{"name":"x","mode":2}`), 403, "4031")
	expect(s.call("POST", ws, owner, `{"name":"x","mode":3}`), 400, "4000")
	// A client cannot smuggle an identity assertion past the plugin.
	forged := map[string]string{"X-Keygate-Identity": "eyJhbGciOiJub25lIn0.eyJ3b3Jrc3BhY2VJZCI6IndzX2RlbW8iLCJyb2xlIjoiT1dORVIifQ.", "X-PORTAL-ACCESS-CODE": publicCode}
	expect(s.call("GET", ws, forged, ""), 401, "4010")

	// The console route has no plugin: it must not reach anything but the
	// console, however the path is encoded.
	for _, p := range []string{"/console%2F..%2Fmetrics", "/console%2F..%2Fweb/v1/workspaces/" + workspace + "/api-keys", "/console/..%2Freadyz"} {
		r := s.call("GET", p, map[string]string{"Authorization": "Bearer " + s.adminToken}, "")
		if r.status != 404 {
			t.Fatalf("GET %s through the console route: %d %s", p, r.status, r.body)
		}
	}

	// Revoke: rejected at the gateway within 1 s.
	expect(s.call("DELETE", ws+"/"+wlID, owner, ""), 200, "2000")
	revoked := time.Now()
	for {
		r := s.call("GET", "/orders/7", map[string]string{"X-API-Key": wlKey}, "")
		if r.status == 401 {
			expect(r, 401, "4012")
			break
		}
		if time.Since(revoked) > 1100*time.Millisecond {
			t.Fatalf("revoked key still allowed after %s", time.Since(revoked))
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Sidecar down: fail closed. Back up: served again without restarting the plugin.
	s.canRestartSidecar(t)
	s.stopSidecar(t)
	time.Sleep(1100 * time.Millisecond)
	expect(s.call("GET", "/orders/7", map[string]string{"X-API-Key": openKey}, ""), 503, "5030")
	s.restartSidecar(t)
	back := time.Now()
	for s.call("GET", "/orders/7", map[string]string{"X-API-Key": openKey}, "").status != 200 {
		if time.Since(back) > time.Second {
			t.Fatal("not served within 1 s of the sidecar being ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !external && s.kongemu.ProcessState != nil {
		t.Fatal("kongemu exited")
	}
}
