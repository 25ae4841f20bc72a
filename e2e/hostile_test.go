package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/keygate/keygate/internal/apikey"
)

// hostile is one adversarial request and the answer it must get.
type hostile struct {
	name   string
	method string      // default GET
	path   string      // default /orders/1
	header http.Header // sent as given (several values, any count)
	body   string
	ctype  string // Content-Type with a body; default application/json
	// raw, when set, is written on a TCP connection as is (for what Go's
	// client refuses to send: CR/LF or NUL in a header, bad names); %IP%
	// is the case's client IP.
	raw    string
	status int
	// code is the envelope code; "" means no envelope: the upstream (200)
	// or kongemu itself (its own 4xx, as Go's net/http server answers).
	code  string
	check func(t *testing.T, r result)
}

// TestHostileInputs sends adversarial input across both roles through the
// real stack (kongemu + the keygate plugin + sidecar + upstream) and
// asserts the exact answer of each. Every case comes from its own client
// IP (X-Forwarded-For, trusted from 127.0.0.1) so that the
// failed-verification limiter, which has its own test, does not interfere.
func TestHostileInputs(t *testing.T) {
	s := startStack(t)
	ws := keysPath
	ownerJWT := mintJWT("alice", workspace, "OWNER")
	owner := map[string]string{"Authorization": "Bearer " + ownerJWT, "X-PORTAL-ACCESS-CODE": publicCode}
	partner := map[string]string{"Authorization": "Bearer " + ownerJWT, "X-PORTAL-ACCESS-CODE": partnerCode}
	create := func(h map[string]string, body string) (secret, id string) {
		r := s.call("POST", ws, h, body)
		wantEnvelope(t, r, 201, "2000")
		return str(r.data["secret"]), str(r.data["apiKeyId"])
	}
	live, liveID := create(owner, `{"name":"live","scopes":["orders:read"]}`)
	live2, _ := create(owner, `{"name":"live 2","scopes":["orders:read"]}`)
	testKey, _ := create(partner, `{"name":"sandbox","scopes":["orders:read"],"mode":2}`)
	revoked, revokedID := create(owner, `{"name":"revoked","scopes":["orders:read"]}`)
	wantEnvelope(t, s.call("DELETE", ws+"/"+revokedID, owner, ""), 200, "2000")
	// A key of another workspace, made with the admin token.
	otherKeyID := s.adminCreate(t, "ws_other", `{"name":"theirs","scopes":["orders:read"]}`)
	unknown := apikey.NewSecret(apikey.Live).Reveal() // right prefix and checksum, never issued
	badSum := []byte(live)
	badSum[len(badSum)-1] ^= 1
	confusable := strings.Replace(live, "a", "\u0430", 1) // Cyrillic а
	if confusable == live {
		confusable = live[:10] + "\u0430" + live[11:]
	}

	hs := func(secret string, c jwt.MapClaims) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	claims := func(mut func(jwt.MapClaims)) jwt.MapClaims {
		now := time.Now()
		c := jwt.MapClaims{"sub": "alice", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
			"workspaces": map[string]string{workspace: "OWNER"}}
		if mut != nil {
			mut(c)
		}
		return c
	}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims(nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	aud := make([]string, 10000)
	for i := range aud {
		aud[i] = "a"
	}
	forgedIdentity := hs("not-the-gateway-secret-0123456789", jwt.MapClaims{"sub": "mallory", "workspaceId": "ws_other", "role": "OWNER",
		"portal": "PARTNER", "allowTestMode": true, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Minute).Unix()})
	manageH := func(auth string, kv ...string) http.Header {
		h := http.Header{"X-Portal-Access-Code": {publicCode}}
		if auth != "" {
			h.Set("Authorization", auth)
		}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return h
	}
	ownerH := func(kv ...string) http.Header { return manageH("Bearer "+ownerJWT, kv...) }
	key := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return h
	}
	manyHeaders := func(n int, base http.Header) http.Header {
		for i := range n {
			base.Set(fmt.Sprintf("X-Filler-%04d", i), "v")
		}
		return base
	}
	ips := make([]string, 0, 101)
	for i := range 101 {
		ips = append(ips, fmt.Sprintf(`"10.%d.%d.0/24"`, i/256, i%256))
	}
	rawGET := func(path, headers string) string {
		return "GET " + path + " HTTP/1.1\r\nHost: gateway\r\nX-Forwarded-For: %IP%\r\n" + headers + "Connection: close\r\n\r\n"
	}
	upstreamSaw := func(id string) func(t *testing.T, r result) {
		return func(t *testing.T, r result) {
			t.Helper()
			up, _ := r.json["headers"].(map[string]any)
			ids, _ := up["X-Api-Key-Id"].([]any)
			if len(ids) != 1 || ids[0] != id || up["X-Api-Key"] != nil || up["Authorization"] != nil {
				t.Fatalf("upstream saw %v", up)
			}
			// hide_credentials: no copy of the key under another spelling.
			for name, v := range up {
				if folded := strings.ReplaceAll(strings.ToLower(name), "_", "-"); folded == "x-api-key" || folded == "authorization" {
					t.Fatalf("the key reached the upstream as %s: %v", name, v)
				}
			}
			for _, h := range []string{"X-Workspace-Id", "X-Api-Key-Mode"} {
				if v, _ := up[h].([]any); len(v) != 1 {
					t.Fatalf("upstream %s = %v", h, up[h])
				}
			}
			if first(up["X-Workspace-Id"]) != workspace || first(up["X-Api-Key-Mode"]) != "LIVE" {
				t.Fatalf("upstream identity %v", up)
			}
			// No client header spelling ours with '_' (which CGI/WSGI
			// servers read as the same header) or X-Keygate-*.
			for name := range up {
				folded := strings.ReplaceAll(strings.ToLower(name), "_", "-")
				exact := name == "X-Api-Key-Id" || name == "X-Workspace-Id" || name == "X-Api-Key-Mode"
				if !exact && (strings.HasPrefix(folded, "x-keygate-") || folded == "x-api-key-id" || folded == "x-workspace-id" || folded == "x-api-key-mode") {
					t.Fatalf("client header %s reached the upstream: %v", name, up[name])
				}
			}
		}
	}
	listed := func(t *testing.T, r result) {
		t.Helper()
		if _, ok := r.data["items"].([]any); !ok {
			t.Fatalf("not the key list: %.300s", r.body)
		}
	}

	cases := []hostile{
		// ---- enforce: where the key comes from ----
		{name: "no key", status: 401, code: "4011"},
		{name: "key in the query string only", path: "/orders/1?apikey=" + live + "&api_key=" + live, status: 401, code: "4011"},
		{name: "key in the query string, empty X-API-Key", path: "/orders/1?apikey=" + live, header: key("X-API-Key", "  "), status: 401, code: "4011"},
		{name: "Basic scheme", header: key("Authorization", "Basic "+live), status: 401, code: "4011"},
		{name: "Bearer with two tokens", header: key("Authorization", "Bearer "+live+" "+live), status: 401, code: "4011"},
		{name: "Bearer with extra spaces", header: key("Authorization", "Bearer     "+live+"   "), status: 200, check: upstreamSaw(liveID)},
		{name: "bearer, lower-case scheme", header: key("Authorization", "bearer "+live), status: 200, check: upstreamSaw(liveID)},
		{name: "BEARER with a tab", header: key("Authorization", "BEARER\t"+live), status: 200, check: upstreamSaw(liveID)},
		{name: "X-API-Key with surrounding spaces", header: key("X-API-Key", "  "+live+" "), status: 200, check: upstreamSaw(liveID)},
		{name: "two different keys in two headers", header: key("Authorization", "Bearer "+live, "X-API-Key", live2), status: 401, code: "4012"},
		{name: "two different X-API-Key lines", header: key("X-API-Key", live, "X-API-Key", live2), status: 401, code: "4012"},
		{name: "one key in two headers", header: key("Authorization", "Bearer "+live, "X-API-Key", live), status: 200, check: upstreamSaw(liveID)},
		{name: "a copy of the key spelled X_API_KEY", header: key("X-API-Key", live, "X_API_KEY", live, "x_Api_key", live), status: 200, check: upstreamSaw(liveID)},
		{name: "the key spelled X_API_KEY only", header: key("X_API_KEY", live), status: 401, code: "4011"},

		// ---- enforce: what the key is ----
		{name: "right prefix and checksum, unknown", header: key("X-API-Key", unknown), status: 401, code: "4012"},
		{name: "well-formed unknown sk_test_ key", header: key("X-API-Key", apikey.NewSecret(apikey.Test).Reveal()), status: 401, code: "4012"},
		{name: "bad checksum", header: key("X-API-Key", string(badSum)), status: 401, code: "4012"},
		{name: "Unicode confusable in the key (Cyrillic а)", header: key("X-API-Key", confusable), status: 401, code: "4012"},
		{name: "apiKeyId instead of the secret", header: key("X-API-Key", liveID), status: 401, code: "4012"},
		{name: "key with a trailing character", header: key("X-API-Key", live+"0"), status: 401, code: "4012"},
		{name: "revoked key", header: key("X-API-Key", revoked), status: 401, code: "4012"},
		{name: "sk_test_ key on a LIVE route", header: key("X-API-Key", testKey), status: 403, code: "4035"},
		{name: "LIVE key on the TEST route", path: "/sandbox/orders/1", header: key("X-API-Key", live), status: 403, code: "4035"},
		{name: "forged upstream identity headers", header: key("X-API-Key", live, "X-Api-Key-Id", "sk_live_forgedforgedforg", "X-Workspace-Id", "ws_other",
			"X-Api-Key-Mode", "TEST"), status: 200, check: upstreamSaw(liveID)},
		{name: "forged identity headers spelled with underscores, X-Keygate-*", header: key("X-API-Key", live, "X_Api_Key_Id", "sk_live_forgedforgedforg",
			"X-Workspace_Id", "ws_other", "X_API_KEY_MODE", "TEST", "X-Keygate-Identity", "forged", "X_Keygate_Admin", "true"), status: 200, check: upstreamSaw(liveID)},
		{name: "200 headers", header: manyHeaders(200, key("X-API-Key", live)), status: 200, check: upstreamSaw(liveID)},
		{name: "1200 headers: more than Kong hands the plugin", header: manyHeaders(1200, key("X-API-Key", live)), status: 400, code: "4000"},
		{name: "1 MiB Authorization header (nginx's 8 KiB header line)", header: key("Authorization", "Bearer "+strings.Repeat("A", 1<<20)), status: 400},
		{name: "bare CR in a header value (header injection)", raw: rawGET("/orders/1", "X-API-Key: "+live+"\rX-Api-Key-Id: forged\r\n"), status: 400},
		{name: "NUL in a header value", raw: rawGET("/orders/1", "X-API-Key: "+live+"\x00\r\n"), status: 400},
		// Kong hands header bytes over as they came; go-pdk cannot decode
		// a value that is not UTF-8, and the plugin answers 400/4000.
		{name: "key header not UTF-8", raw: rawGET("/orders/1", "X-API-Key: "+live+"\xff\xfe\r\n"), status: 400, code: "4000"},
		{name: "other header not UTF-8", raw: rawGET("/orders/1", "X-API-Key: "+live+"\r\nX-Note: caf\xe9\r\n"), status: 400, code: "4000"},
		{name: "space before the colon of a header name", raw: rawGET("/orders/1", "X-API-Key : "+live+"\r\n"), status: 400},
		{name: "folded header line (obs-fold injection)", raw: rawGET("/orders/1", "X-API-Key: "+live+"\r\n X-Api-Key-Id: forged\r\n"), status: 401, code: "4012"},

		// ---- manage: the token ----
		{name: "manage: no Authorization", path: ws, header: manageH(""), status: 401, code: "4010"},
		{name: "manage: a header not UTF-8", raw: rawGET(ws, "Authorization: Bearer "+ownerJWT+"\r\nX-PORTAL-ACCESS-CODE: "+publicCode+"\r\nX-Note: \xff\r\n"),
			status: 400, code: "4000"},
		// get_path decodes %ff (kong/tools/uri.lua normalize); go-pdk cannot
		// decode the result: the client's fault, 400, not 500.
		{name: "manage: a path not UTF-8 once decoded", path: ws + "/%ff", header: manageH("Bearer " + ownerJWT), status: 400, code: "4000"},
		{name: "manage: expired JWT", path: ws, header: manageH("Bearer " + hs(jwtSecret, claims(func(c jwt.MapClaims) {
			c["iat"], c["exp"] = time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
		}))), status: 401, code: "4010"},
		{name: "manage: alg none", path: ws, header: manageH("Bearer " + none), status: 401, code: "4010"},
		{name: "manage: HS256 signed with the wrong secret", path: ws, header: manageH("Bearer " + hs("another-secret-of-sufficient-length-0123456789", claims(nil))), status: 401, code: "4010"},
		{name: "manage: JWT without exp", path: ws, header: manageH("Bearer " + hs(jwtSecret, claims(func(c jwt.MapClaims) { delete(c, "exp") }))), status: 401, code: "4010"},
		{name: "manage: JWT with a 10,000-element aud (over nginx's 8 KiB header line)", path: ws, header: manageH("Bearer " + hs(jwtSecret, claims(func(c jwt.MapClaims) { c["aud"] = aud }))), status: 400},
		{name: "manage: two Authorization headers", path: ws, header: manageH("Bearer "+ownerJWT, "Authorization", "Bearer "+ownerJWT), status: 401, code: "4010"},
		{name: "manage: an API key as the token", path: ws, header: manageH("Bearer " + live), status: 401, code: "4010"},
		{name: "manage: forged X-Keygate-Identity without a JWT", path: ws, header: manageH("", "X-Keygate-Identity", forgedIdentity), status: 401, code: "4010"},
		{name: "manage: Bearer with extra spaces", path: ws, header: manageH("Bearer    " + ownerJWT + "  "), status: 200, code: "2000", check: listed},
		{name: "manage: lower-case bearer", path: ws, header: manageH("bearer " + ownerJWT), status: 200, code: "2000", check: listed},

		// ---- manage: who and where ----
		{name: "manage: JWT for another workspace", path: ws, header: manageH("Bearer " + mintJWT("alice", "ws_other", "OWNER")), status: 403, code: "4030"},
		{name: "manage: MEMBER of the workspace", path: ws, header: manageH("Bearer " + mintJWT("bob", workspace, "MEMBER")), status: 403, code: "4030"},
		{name: "manage: owner (lower case) is not OWNER", path: ws, header: manageH("Bearer " + mintJWT("bob", workspace, "owner")), status: 403, code: "4030"},
		{name: "manage: forged X-Keygate-Identity with a valid JWT is replaced", path: ws, header: ownerH("X-Keygate-Identity", forgedIdentity, "X-Keygate-Role", "OWNER"),
			status: 200, code: "2000", check: listed},
		{name: "manage: path traversal ..", path: "/web/v1/workspaces/" + workspace + "/../ws_other/api-keys", header: ownerH(), status: 403, code: "4030"},
		{name: "manage: path traversal %2e%2e", path: "/web/v1/workspaces/" + workspace + "/%2e%2e/ws_other/api-keys", header: ownerH(), status: 403, code: "4030"},
		{name: "manage: encoded slash in the workspace", path: "/web/v1/workspaces/" + workspace + "%2F..%2Fws_other/api-keys", header: ownerH(), status: 403, code: "4030"},
		// Kong (and kongemu) normalise the path before routing, and both the
		// plugin (get_path) and the sidecar see the normalised one: what is
		// checked is what is served.
		{name: "manage: double slash is merged", path: "/web/v1/workspaces/" + workspace + "//api-keys", header: ownerH(), status: 200, code: "2000", check: listed},
		{name: "manage: traversal back into one's own workspace", path: "/web/v1/workspaces/ws_other/../" + workspace + "/api-keys", header: ownerH(),
			status: 200, code: "2000", check: listed},
		{name: "manage: traversal onto the product route (the JWT is no API key)", path: "/web/v1/workspaces/../../../orders/1", header: ownerH(), status: 401, code: "4012"},
		{name: "manage: another workspace's key id", path: ws + "/" + otherKeyID, header: ownerH(), status: 404, code: "4040"},
		{name: "manage: unknown portal", path: ws, header: http.Header{"Authorization": {"Bearer " + ownerJWT}, "X-Portal-Access-Code": {"nope"}}, status: 403, code: "4032"},
		{name: "manage: two portal codes", path: ws, header: ownerH("X-Portal-Access-Code", partnerCode), status: 403, code: "4032"},
		{name: "manage: 1200 headers", path: ws, header: manyHeaders(1200, ownerH()), status: 400, code: "4000"},
		{name: "manage: method not allowed", method: "PUT", path: ws, header: ownerH(), body: `{"name":"x"}`, status: 405, code: "4050"},

		// ---- manage: the create body (reaches the sidecar) ----
		{name: "create: CRLF in the name", method: "POST", path: ws, header: ownerH(), body: "{\"name\":\"evil\r\nX-Injected: 1\"}", status: 400, code: "4000"},
		{name: "create: escaped CRLF in the name", method: "POST", path: ws, header: ownerH(), body: `{"name":"evil\r\nX-Injected: 1"}`, status: 400, code: "4000"},
		{name: "create: NUL in the name", method: "POST", path: ws, header: ownerH(), body: `{"name":"a\u0000b"}`, status: 400, code: "4000"},
		{name: "create: name of white space only", method: "POST", path: ws, header: ownerH(), body: `{"name":" \t "}`, status: 400, code: "4000"},
		{name: "create: name of 129 code points", method: "POST", path: ws, header: ownerH(), body: `{"name":"` + strings.Repeat("é", 129) + `"}`, status: 400, code: "4000"},
		{name: "create: name not UTF-8", method: "POST", path: ws, header: ownerH(), body: "{\"name\":\"a\xffb\"}", status: 400, code: "4000"},
		{name: "create: Cyrillic а in a scope", method: "POST", path: ws, header: ownerH(), body: `{"name":"x","scopes":["orders:re\u0430d"]}`, status: 400, code: "4000"},
		{name: "create: fullwidth colon in a scope", method: "POST", path: ws, header: ownerH(), body: `{"name":"x","scopes":["orders\uff1aread"]}`, status: 400, code: "4000"},
		{name: "create: 65 KiB body", method: "POST", path: ws, header: ownerH(), body: `{"name":"` + strings.Repeat("x", 65<<10) + `"}`, status: 413, code: "4130"},
		{name: "create: text/plain", method: "POST", path: ws, header: ownerH(), body: `{"name":"x"}`, ctype: "text/plain", status: 415, code: "4150"},
		{name: "create: no Content-Type", method: "POST", path: ws, header: ownerH(), body: `{"name":"x"}`, ctype: "-", status: 415, code: "4150"},
		{name: "create: duplicate JSON keys", method: "POST", path: ws, header: ownerH(), body: `{"name":"a","name":"b"}`, status: 400, code: "4000"},
		{name: "create: deeply nested JSON", method: "POST", path: ws, header: ownerH(), body: `{"name":"x","scopes":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`, status: 400, code: "4000"},
		{name: "create: NaN", method: "POST", path: ws, header: ownerH(), body: `{"name":"x","mode":NaN}`, status: 400, code: "4000"},
		{name: "create: Infinity", method: "POST", path: ws, header: ownerH(), body: `{"name":"x","mode":Infinity}`, status: 400, code: "4000"},
		{name: "create: mode \"2\" as a string", method: "POST", path: ws, header: http.Header{"Authorization": {"Bearer " + ownerJWT}, "X-Portal-Access-Code": {partnerCode}}, body: `{"name":"x","mode":"2"}`, status: 400, code: "4000"},
		{name: "create: mode 1.5", method: "POST", path: ws, header: ownerH(), body: `{"name":"x","mode":1.5}`, status: 400, code: "4000"},
		{name: "create: mode 1e0", method: "POST", path: ws, header: ownerH(), body: `{"name":"x","mode":1e0}`, status: 400, code: "4000"},
		{name: "create: mode 2 from the PUBLIC portal", method: "POST", path: ws, header: ownerH(), body: `{"name":"x","mode":2}`, status: 403, code: "4031"},
		{name: "create: 101 IP entries", method: "POST", path: ws, header: ownerH(), body: `{"name":"x","ipWhitelist":[` + strings.Join(ips, ",") + `]}`, status: 400, code: "4000"},
		{name: "create: IP with a zone", method: "POST", path: ws, header: ownerH(), body: `{"name":"x","ipWhitelist":["fe80::1%eth0"]}`, status: 400, code: "4000"},
		{name: "create: IP with leading zeros", method: "POST", path: ws, header: ownerH(), body: `{"name":"x","ipWhitelist":["010.0.0.1"]}`, status: 400, code: "4000"},
		{name: "create: CIDR with host bits", method: "POST", path: ws, header: ownerH(), body: `{"name":"x","ipWhitelist":["192.168.1.5/24"]}`, status: 400, code: "4000",
			check: func(t *testing.T, r result) {
				if !strings.Contains(str(r.json["message"]), "192.168.1.0/24") {
					t.Fatalf("message %q does not give the masked form", r.json["message"])
				}
			}},
		{name: "create: workspaceId in the body", method: "POST", path: ws, header: ownerH(), body: `{"name":"x","workspaceId":"ws_other"}`, status: 400, code: "4000"},
		{name: "create: trailing data", method: "POST", path: ws, header: ownerH(), body: `{"name":"x"} {"name":"y"}`, status: 400, code: "4000"},
		{name: "create: a JSON array", method: "POST", path: ws, header: ownerH(), body: `[{"name":"x"}]`, status: 400, code: "4000"},
		{name: "create: expiresAt in the past", method: "POST", path: ws, header: ownerH(), body: `{"name":"x","expiresAt":"2001-01-01T00:00:00Z"}`, status: 400, code: "4000"},
		{name: "create: 65 scopes", method: "POST", path: ws, header: ownerH(), body: `{"name":"x","scopes":[` + scopes(65) + `]}`, status: 400, code: "4000"},
		{name: "create: raw CRLF inside the JSON name", raw: rawPOST(ws, "Authorization: Bearer "+ownerJWT+"\r\nX-PORTAL-ACCESS-CODE: "+publicCode+"\r\n",
			"{\"name\":\"a\r\nX-Injected: 1\r\n\r\nb\"}"), status: 400, code: "4000"},
	}
	if len(cases) < 40 {
		t.Fatalf("only %d hostile inputs", len(cases))
	}
	keysBefore := s.countKeys(t, owner)
	for i, tc := range cases {
		ip := fmt.Sprintf("198.18.%d.%d", i/250, i%250+1)
		t.Run(tc.name, func(t *testing.T) {
			var r result
			if tc.raw != "" {
				r = s.raw(t, strings.ReplaceAll(tc.raw, "%IP%", ip))
			} else {
				r = s.send(t, tc, ip)
			}
			if external && tc.code == "" && tc.status >= 400 {
				// The gateway's own refusal (nginx's, not kongemu's):
				// any 4xx that is not an envelope of ours.
				if r.status < 400 || r.status >= 500 || r.json["code"] != nil {
					t.Fatalf("got %d %.300s, want the gateway's own 4xx", r.status, r.body)
				}
				return
			}
			wantEnvelope(t, r, tc.status, tc.code)
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
	// Nothing was stored by any hostile create.
	if n := s.countKeys(t, owner); n != keysBefore {
		t.Errorf("%d keys before the hostile creates, %d after", keysBefore, n)
	}
	// The stack is still healthy.
	wantEnvelope(t, s.call("GET", "/orders/1", map[string]string{"X-API-Key": live}, ""), 200, "")
}

// rawPOST is a JSON POST through the gateway, written byte for byte.
func rawPOST(path, headers, body string) string {
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: gateway\r\nX-Forwarded-For: %%IP%%\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		path, headers, len(body), body)
}

func scopes(n int) string {
	var b []string
	for i := range n {
		b = append(b, fmt.Sprintf(`"s%d:read"`, i))
	}
	return strings.Join(b, ",")
}

// send makes the request of a hostile case with Go's client.
func (s *stack) send(t *testing.T, tc hostile, ip string) result {
	t.Helper()
	method, path := tc.method, tc.path
	if method == "" {
		method = "GET"
	}
	if path == "" {
		path = "/orders/1"
	}
	var body io.Reader
	if tc.body != "" {
		body = strings.NewReader(tc.body)
	}
	req, err := http.NewRequest(method, s.gateway+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range tc.header {
		req.Header[k] = v
	}
	req.Header.Set("X-Forwarded-For", ip)
	switch {
	case tc.ctype == "-":
	case tc.ctype != "":
		req.Header.Set("Content-Type", tc.ctype)
	case tc.body != "":
		req.Header.Set("Content-Type", "application/json")
	}
	client := http.Client{Timeout: 10 * time.Second}
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	return readResult(res)
}

// raw writes req on a new connection to the gateway and reads the answer.
func (s *stack) raw(t *testing.T, req string) result {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(s.gateway, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	defer res.Body.Close()
	return readResult(res)
}

// adminCreate creates a key in ws directly at the sidecar with the admin
// token and returns its apiKeyId.
func (s *stack) adminCreate(t *testing.T, ws, body string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", s.sidecarURL+"/web/v1/workspaces/"+ws+"/api-keys", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.adminToken)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	r := readResult(res)
	if r.status != 201 {
		t.Fatalf("admin create: %d %s", r.status, r.body)
	}
	return str(r.data["apiKeyId"])
}

// countKeys lists the demo workspace's keys through the gateway.
func (s *stack) countKeys(t *testing.T, owner map[string]string) int {
	t.Helper()
	r := s.call("GET", "/web/v1/workspaces/"+workspace+"/api-keys?limit=100", owner, "")
	items, ok := r.data["items"].([]any)
	if r.status != 200 || !ok {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	return len(items)
}
