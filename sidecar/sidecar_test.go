package sidecar_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/internal/envelope"
	"github.com/keygate/keygate/internal/identity"
	"github.com/keygate/keygate/sidecar"
	"github.com/keygate/keygate/store"
)

var (
	secretRe = regexp.MustCompile(`^sk_(live|test)_[0-9A-Za-z]{38}$`)
	idRe     = regexp.MustCompile(`^sk_(live|test)_[0-9A-Za-z]{14}$`)
	timeRe   = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)
)

// The seed page's example request gives the seed page's example shape.
func TestCreateSeedExample(t *testing.T) {
	t.Parallel()
	h := start(t)
	r := h.do("POST", "/web/v1/workspaces/ws_seed/api-keys", owner(t, "ws_seed", "PARTNER", true),
		`{"name":"Production Key","scopes":["payment:read","payment:write"],"mode":1,"ipWhitelist":["192.168.1.0/24"]}`,
		"X-Request-Id", "req-seed-1")
	h.expect(r, envelope.OK)
	if r.status != 201 || r.header.Get("Cache-Control") != "no-store" || r.env.RequestID != "req-seed-1" || r.env.Message != "SUCCESS" {
		t.Fatalf("create: %d %v %s", r.status, r.header, r.raw)
	}
	var top map[string]json.RawMessage
	json.Unmarshal(r.raw, &top)
	assertKeys(t, top, "version", "timestamp", "success", "code", "message", "requestId", "data")
	var data map[string]json.RawMessage
	json.Unmarshal(top["data"], &data)
	assertKeys(t, data, "apiKeyId", "secret", "name", "status", "mode", "scopes", "ipWhitelist", "createdAt", "lastUsedAt", "secretHint")
	var k keyObj
	r.data(t, &k)
	if !idRe.MatchString(k.APIKeyID) || !strings.HasPrefix(k.APIKeyID, "sk_live_") || !secretRe.MatchString(k.Secret) ||
		k.Name != "Production Key" || k.Status != "ACTIVE" || k.Mode != "LIVE" ||
		fmt.Sprint(k.Scopes) != "[payment:read payment:write]" || fmt.Sprint(k.IPWhitelist) != "[192.168.1.0/24]" ||
		!timeRe.MatchString(k.CreatedAt) || k.SecretHint != k.Secret[:8]+"…"+k.Secret[len(k.Secret)-4:] {
		t.Fatalf("data = %+v", k)
	}
	if _, ok := apikey.ParseSecret(k.Secret); !ok {
		t.Fatal("secret fails its own checksum")
	}
	// No other response carries the secret.
	for _, path := range []string{"/web/v1/workspaces/ws_seed/api-keys", "/web/v1/workspaces/ws_seed/api-keys/" + k.APIKeyID} {
		r := h.do("GET", path, "admin", "")
		if strings.Contains(string(r.raw), k.Secret) || strings.Contains(string(r.raw), `"secret"`) {
			t.Fatalf("GET %s leaks the secret: %s", path, r.raw)
		}
	}
}

func assertKeys(t *testing.T, m map[string]json.RawMessage, want ...string) {
	t.Helper()
	var got []string
	for k := range m {
		got = append(got, k)
	}
	sort.Strings(got)
	sort.Strings(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("fields = %v, want %v", got, want)
	}
}

func TestCreateValidation(t *testing.T) {
	t.Parallel()
	h := start(t, func(c *sidecar.Config) {
		c.Scopes = map[string]bool{"payment:read": true, "payment:write": true}
	})
	ips := func(n int) string {
		var s []string
		for i := range n {
			s = append(s, fmt.Sprintf(`"10.0.%d.%d"`, i/250, i%250))
		}
		return "[" + strings.Join(s, ",") + "]"
	}
	scopes := func(n int) string {
		var s []string
		for i := range n {
			s = append(s, fmt.Sprintf(`"a:s%d"`, i))
		}
		return "[" + strings.Join(s, ",") + "]"
	}
	long := func(n int) string { return strings.Repeat("é", n) }
	tests := []struct {
		name, body, ctype string
		code              envelope.Code
		msg               string // substring of the message
	}{
		{"name empty", `{"name":""}`, "", envelope.BadRequest, "name must be 1-128 characters"},
		{"name 129 code points", `{"name":"` + long(129) + `"}`, "", envelope.BadRequest, "name must be 1-128"},
		{"name whitespace only", `{"name":"   \t "}`, "", envelope.BadRequest, "name must be 1-128"},
		{"name invalid utf-8", "{\"name\":\"a\xff\xfeb\"}", "", envelope.BadRequest, "name must be valid UTF-8"},
		{"name lone surrogate", `{"name":"a\ud800b"}`, "", envelope.BadRequest, "name must be valid UTF-8"},
		{"name control char", `{"name":"a\u0007b"}`, "", envelope.BadRequest, "name must not contain control"},
		{"name newline", `{"name":"a\nb"}`, "", envelope.BadRequest, "name must not contain control"},
		{"name missing", `{"scopes":[]}`, "", envelope.BadRequest, "name is required"},
		{"name null", `{"name":null}`, "", envelope.BadRequest, "name is required"},
		{"name number", `{"name":5}`, "", envelope.BadRequest, "name must be a string"},
		{"scopes duplicates fine but bad format", `{"name":"k","scopes":["Payment:read"]}`, "", envelope.BadRequest, "scopes[0] must match"},
		{"scope without colon", `{"name":"k","scopes":["payment"]}`, "", envelope.BadRequest, "scopes[0] must match"},
		{"scope unknown in catalog", `{"name":"k","scopes":["payment:refund"]}`, "", envelope.BadRequest, "scopes[0] \"payment:refund\" is not a known scope"},
		{"scope confusable", `{"name":"k","scopes":["pаyment:read"]}`, "", envelope.BadRequest, "scopes[0] must match"},
		{"scopes 65", `{"name":"k","scopes":` + scopes(65) + `}`, "", envelope.BadRequest, "scopes must have at most 64"},
		{"scopes not array", `{"name":"k","scopes":"payment:read"}`, "", envelope.BadRequest, "scopes must be an array of strings"},
		{"scopes number item", `{"name":"k","scopes":[1]}`, "", envelope.BadRequest, "scopes must be an array of strings"},
		{"mode 0", `{"name":"k","mode":0}`, "", envelope.BadRequest, "mode must be the integer 1"},
		{"mode 3", `{"name":"k","mode":3}`, "", envelope.BadRequest, "mode must be the integer 1"},
		{"mode string", `{"name":"k","mode":"1"}`, "", envelope.BadRequest, "mode must be the integer 1"},
		{"mode 1.5", `{"name":"k","mode":1.5}`, "", envelope.BadRequest, "mode must be the integer 1"},
		{"mode 1.0", `{"name":"k","mode":1.0}`, "", envelope.BadRequest, "mode must be the integer 1"},
		{"ip 300.1.1.1", `{"name":"k","ipWhitelist":["300.1.1.1"]}`, "", envelope.BadRequest, "ipWhitelist[0] 300.1.1.1"},
		{"ip /33", `{"name":"k","ipWhitelist":["10.0.0.0/33"]}`, "", envelope.BadRequest, "ipWhitelist[0] 10.0.0.0/33"},
		{"ip leading zero", `{"name":"k","ipWhitelist":["01.2.3.4"]}`, "", envelope.BadRequest, "ipWhitelist[0] 01.2.3.4"},
		{"ip zone", `{"name":"k","ipWhitelist":["fe80::1%eth0"]}`, "", envelope.BadRequest, "zones are not allowed"},
		{"ip host bits", `{"name":"k","ipWhitelist":["192.168.1.5/24"]}`, "", envelope.BadRequest, "192.168.1.5/24: did you mean 192.168.1.0/24?"},
		{"ipv6 host bits", `{"name":"k","ipWhitelist":["2001:db8::1/32"]}`, "", envelope.BadRequest, "did you mean 2001:db8::/32?"},
		{"ip 101 entries", `{"name":"k","ipWhitelist":` + ips(101) + `}`, "", envelope.BadRequest, "ipWhitelist must have at most 100"},
		{"ip not a string", `{"name":"k","ipWhitelist":[1]}`, "", envelope.BadRequest, "ipWhitelist must be an array of strings"},
		{"expiresAt past", `{"name":"k","expiresAt":"2020-01-01T00:00:00Z"}`, "", envelope.BadRequest, "expiresAt must be in the future"},
		{"expiresAt not rfc3339", `{"name":"k","expiresAt":"tomorrow"}`, "", envelope.BadRequest, "expiresAt must be an RFC 3339"},
		{"unknown field", `{"name":"k","owner":"me"}`, "", envelope.BadRequest, `unknown field "owner"`},
		{"duplicate field", `{"name":"k","name":"j"}`, "", envelope.BadRequest, `duplicate field "name"`},
		{"trailing garbage", `{"name":"k"} x`, "", envelope.BadRequest, "unexpected data after the JSON object"},
		{"two objects", `{"name":"k"}{"name":"j"}`, "", envelope.BadRequest, "unexpected data after the JSON object"},
		{"array body", `[{"name":"k"}]`, "", envelope.BadRequest, "body must be a JSON object"},
		{"not json", `name=k`, "", envelope.BadRequest, "body must be a JSON object"},
		{"truncated", `{"name":"k"`, "", envelope.BadRequest, "not valid JSON"},
		{"wrong content type", `{"name":"k"}`, "text/plain", envelope.UnsupportedMedia, "Content-Type must be application/json"},
		{"form content type", `{"name":"k"}`, "application/x-www-form-urlencoded", envelope.UnsupportedMedia, "Content-Type must be application/json"},
		{"65 KiB body", `{"name":"k","x":"` + strings.Repeat("a", 65<<10) + `"}`, "", envelope.TooLarge, "Request body too large"},
		{"mode 2 without test-mode portal", `{"name":"k","mode":2}`, "nontest", envelope.TestModePortal, "TEST keys can only be created from the PARTNER portal"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := h.with(t)
			auth := "admin"
			hdr := []string{}
			switch tc.ctype {
			case "":
			case "nontest":
				auth = owner(t, "ws_v", "PUBLIC", false)
			default:
				hdr = []string{"Content-Type", tc.ctype}
			}
			r := h.do("POST", "/web/v1/workspaces/ws_v/api-keys", auth, tc.body, hdr...)
			h.expect(r, tc.code)
			if !strings.Contains(r.env.Message, tc.msg) {
				t.Fatalf("message %q does not contain %q", r.env.Message, tc.msg)
			}
			if r.env.Data != nil {
				t.Fatalf("error carries data: %s", r.raw)
			}
		})
	}
	if n := h.count("ws_v"); n != 0 {
		t.Fatalf("failed requests stored %d keys", n)
	}
}

func TestCreateNormalizes(t *testing.T) {
	t.Parallel()
	h := start(t)
	tests := []struct {
		name, body string
		check      func(k keyObj) bool
	}{
		{"name 128 code points", `{"name":"` + strings.Repeat("語", 128) + `"}`, func(k keyObj) bool { return len([]rune(k.Name)) == 128 }},
		{"name trimmed", `{"name":"  Prod  "}`, func(k keyObj) bool { return k.Name == "Prod" }},
		{"scopes null", `{"name":"k","scopes":null}`, func(k keyObj) bool { return k.Scopes != nil && len(k.Scopes) == 0 }},
		{"scopes empty", `{"name":"k","scopes":[]}`, func(k keyObj) bool { return k.Scopes != nil && len(k.Scopes) == 0 }},
		{"scopes absent", `{"name":"k"}`, func(k keyObj) bool { return k.Scopes != nil && len(k.Scopes) == 0 && k.IPWhitelist != nil }},
		{"scope duplicates removed keeping first", `{"name":"k","scopes":["b:x","a:y","b:x"]}`, func(k keyObj) bool { return fmt.Sprint(k.Scopes) == "[b:x a:y]" }},
		{"mode null is LIVE", `{"name":"k","mode":null}`, func(k keyObj) bool { return k.Mode == "LIVE" }},
		{"ip duplicates removed and canonical", `{"name":"k","ipWhitelist":["10.0.0.1","10.0.0.1/32","2001:DB8::/32","::ffff:1.2.3.4"]}`, func(k keyObj) bool {
			return fmt.Sprint(k.IPWhitelist) == "[10.0.0.1 2001:db8::/32 1.2.3.4]"
		}},
		{"ipv6 cidr", `{"name":"k","ipWhitelist":["2001:db8:abcd::/48"]}`, func(k keyObj) bool { return k.IPWhitelist[0] == "2001:db8:abcd::/48" }},
		{"expiresAt", `{"name":"k","expiresAt":"2099-01-02T03:04:05Z"}`, func(k keyObj) bool { return k.ExpiresAt == "2099-01-02T03:04:05Z" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := h.with(t)
			k := h.create("ws_n", tc.body)
			if !tc.check(k) {
				t.Fatalf("created %+v", k)
			}
		})
	}
}

func TestAuthAndOwnership(t *testing.T) {
	t.Parallel()
	h := start(t)
	k := h.create("ws_a", `{"name":"k"}`)
	expired, _ := identity.Sign(gwSecret, identity.Claims{Subject: "u", WorkspaceID: "ws_a", Role: "OWNER"}, time.Now().Add(-2*time.Minute), time.Minute)
	otherPath, _ := identity.Sign(gwSecret, identity.Claims{Subject: "u", WorkspaceID: "ws_a", Role: "OWNER", Path: "/web/v1/workspaces/ws_a/api-keys", Method: "DELETE"}, time.Now(), time.Minute)
	listAssertion, _ := identity.Sign(gwSecret, identity.Claims{Subject: "u", WorkspaceID: "ws_a", Role: "OWNER", Path: "/web/v1/workspaces/ws_a/api-keys", Method: "GET"}, time.Now(), time.Minute)
	getAssertion, _ := identity.Sign(gwSecret, identity.Claims{Subject: "u", WorkspaceID: "ws_a", Role: "OWNER", Path: "/web/v1/workspaces/ws_a/api-keys/" + k.APIKeyID, Method: "GET"}, time.Now(), time.Minute)
	forged, _ := identity.Sign([]byte("another-secret-entirely-000"), identity.Claims{Subject: "u", WorkspaceID: "ws_a", Role: "OWNER"}, time.Now(), time.Minute)
	tests := []struct {
		name, method, path, auth, body string
		code                           envelope.Code
	}{
		{"no credentials", "GET", "/web/v1/workspaces/ws_a/api-keys", "", "", envelope.Unauthorized},
		{"wrong admin token", "GET", "/web/v1/workspaces/ws_a/api-keys", "Bearer not-the-admin-token-000", "", envelope.Unauthorized},
		{"gateway secret is not admin", "GET", "/web/v1/workspaces/ws_a/api-keys", "Bearer " + string(gwSecret), "", envelope.Unauthorized},
		{"expired assertion", "GET", "/web/v1/workspaces/ws_a/api-keys", "assert:" + expired, "", envelope.Unauthorized},
		{"forged assertion", "GET", "/web/v1/workspaces/ws_a/api-keys", "assert:" + forged, "", envelope.Unauthorized},
		{"list assertion replayed as a create", "POST", "/web/v1/workspaces/ws_a/api-keys", "assert:" + listAssertion, `{"name":"x"}`, envelope.Unauthorized},
		{"get assertion replayed as a revoke", "DELETE", "/web/v1/workspaces/ws_a/api-keys/" + k.APIKeyID, "assert:" + getAssertion, "", envelope.Unauthorized},
		{"assertion replayed on another path", "DELETE", "/web/v1/workspaces/ws_a/api-keys/" + k.APIKeyID, "assert:" + otherPath, "", envelope.Unauthorized},
		{"garbage assertion", "GET", "/web/v1/workspaces/ws_a/api-keys", "assert:abc.def.ghi", "", envelope.Unauthorized},
		{"member role", "GET", "/web/v1/workspaces/ws_a/api-keys", assertion(t, identity.Claims{Subject: "u", WorkspaceID: "ws_a", Role: "MEMBER"}), "", envelope.NotOwner},
		{"owner of another workspace", "GET", "/web/v1/workspaces/ws_a/api-keys", owner(t, "ws_b", "P", false), "", envelope.NotOwner},
		{"owner lists", "GET", "/web/v1/workspaces/ws_a/api-keys", owner(t, "ws_a", "P", false), "", envelope.OK},
		{"key of another workspace", "GET", "/web/v1/workspaces/ws_b/api-keys/" + k.APIKeyID, "admin", "", envelope.NotFound},
		{"unknown key", "GET", "/web/v1/workspaces/ws_a/api-keys/sk_live_00000000000000", "admin", "", envelope.NotFound},
		{"malformed key id", "DELETE", "/web/v1/workspaces/ws_a/api-keys/nope", "admin", "", envelope.NotFound},
		{"unknown route", "GET", "/web/v1/workspaces/ws_a/other", "admin", "", envelope.NotFound},
		{"method not allowed", "PUT", "/web/v1/workspaces/ws_a/api-keys", "admin", "{}", envelope.MethodNotAllowed},
		{"roll by GET", "GET", "/web/v1/workspaces/ws_a/api-keys/" + k.APIKeyID + "/roll", "admin", "", envelope.MethodNotAllowed},
		{"bad workspace id", "GET", "/web/v1/workspaces/ws!a/api-keys", "admin", "", envelope.BadRequest},
		{"bad workspace unauthenticated", "GET", "/web/v1/workspaces/ws!a/api-keys", "", "", envelope.Unauthorized},
		{"limit 0", "GET", "/web/v1/workspaces/ws_a/api-keys?limit=0", "admin", "", envelope.BadRequest},
		{"limit 101", "GET", "/web/v1/workspaces/ws_a/api-keys?limit=101", "admin", "", envelope.BadRequest},
		{"bad cursor", "GET", "/web/v1/workspaces/ws_a/api-keys?cursor=zz", "admin", "", envelope.BadRequest},
		{"unknown top path", "GET", "/nope", "", "", envelope.NotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := h.with(t)
			h.expect(h.do(tc.method, tc.path, tc.auth, tc.body), tc.code)
		})
	}
	// 4030 attempts are in the audit trail.
	r := h.do("GET", "/web/v1/workspaces/ws_a/api-key-events", "admin", "")
	if !strings.Contains(string(r.raw), `"action":"DENIED","code":"4030"`) {
		t.Fatalf("denied attempt not recorded: %s", r.raw)
	}
	if r := h.do("PUT", "/web/v1/workspaces/ws_a/api-keys", "admin", "{}"); r.header.Get("Allow") != "GET, POST" {
		t.Fatalf("Allow = %q", r.header.Get("Allow"))
	}
}

func TestTestModeFromPartnerPortal(t *testing.T) {
	t.Parallel()
	h := start(t)
	r := h.do("POST", "/web/v1/workspaces/ws_t/api-keys", owner(t, "ws_t", "PARTNER", true), `{"name":"sandbox","mode":2}`)
	h.expect(r, envelope.OK)
	var k keyObj
	r.data(t, &k)
	if k.Mode != "TEST" || !strings.HasPrefix(k.APIKeyID, "sk_test_") || !strings.HasPrefix(k.Secret, "sk_test_") {
		t.Fatalf("test key %+v", k)
	}
	h.expect(h.do("POST", "/web/v1/workspaces/ws_t/api-keys", owner(t, "ws_t", "PUBLIC", false), `{"name":"sandbox","mode":2}`), envelope.TestModePortal)
	r = h.do("GET", "/web/v1/workspaces/ws_t/api-key-events", "admin", "")
	if !strings.Contains(string(r.raw), `"code":"4031"`) {
		t.Fatalf("4031 not recorded: %s", r.raw)
	}
}

func TestListGetRevokeRoll(t *testing.T) {
	t.Parallel()
	h := start(t)
	var ids []string
	for i := range 5 {
		ids = append(ids, h.create("ws_l", fmt.Sprintf(`{"name":"k%d","scopes":["a:b"]}`, i)).APIKeyID)
	}
	r := h.do("GET", "/web/v1/workspaces/ws_l/api-keys?limit=2", "admin", "")
	var page struct {
		Items      []keyObj `json:"items"`
		NextCursor *string  `json:"nextCursor"`
	}
	r.data(t, &page)
	if len(page.Items) != 2 || page.Items[0].APIKeyID != ids[4] || page.NextCursor == nil {
		t.Fatalf("page 1 %s", r.raw)
	}
	var seen []string
	cursor := ""
	for {
		r := h.do("GET", "/web/v1/workspaces/ws_l/api-keys?limit=2&cursor="+cursor, "admin", "")
		var p struct {
			Items      []keyObj `json:"items"`
			NextCursor *string  `json:"nextCursor"`
		}
		r.data(t, &p)
		for _, k := range p.Items {
			seen = append(seen, k.APIKeyID)
		}
		if p.NextCursor == nil {
			break
		}
		cursor = *p.NextCursor
	}
	if fmt.Sprint(seen) != fmt.Sprint([]string{ids[4], ids[3], ids[2], ids[1], ids[0]}) {
		t.Fatalf("paging %v", seen)
	}

	k := h.create("ws_l", `{"name":"rolled","scopes":["a:b"]}`)
	if !h.verify(k.Secret, "", []string{"a:b"}).Allow {
		t.Fatal("fresh key denied")
	}
	// Roll with a window: both secrets work, only the new one after.
	r = h.do("POST", "/web/v1/workspaces/ws_l/api-keys/"+k.APIKeyID+"/roll", "admin", `{"expireOldInSeconds":3600}`)
	h.expect(r, envelope.OK)
	var rolled keyObj
	r.data(t, &rolled)
	if r.status != 201 || r.header.Get("Cache-Control") != "no-store" || rolled.APIKeyID != k.APIKeyID || rolled.Secret == k.Secret || !secretRe.MatchString(rolled.Secret) {
		t.Fatalf("roll: %d %s", r.status, r.raw)
	}
	old := h.verify(k.Secret, "", []string{"a:b"})
	if !old.Allow || old.ExpiresAt == "" {
		t.Fatalf("old secret in window: %+v", old)
	}
	if !h.verify(rolled.Secret, "", []string{"a:b"}).Allow {
		t.Fatal("new secret denied")
	}
	// Roll without window (empty body): every earlier secret stops at once.
	r = h.do("POST", "/web/v1/workspaces/ws_l/api-keys/"+k.APIKeyID+"/roll", "admin", "")
	h.expect(r, envelope.OK)
	var rolled2 keyObj
	r.data(t, &rolled2)
	for _, s := range []string{k.Secret, rolled.Secret} {
		if v := h.verify(s, "", []string{"a:b"}); v.Allow || v.DenyCode != "4012" {
			t.Fatalf("rolled-out secret: %+v", v)
		}
	}
	for _, body := range []string{`{"expireOldInSeconds":604801}`, `{"expireOldInSeconds":-1}`, `{"expireOldInSeconds":1.5}`, `{"expireOldInSeconds":"1"}`, `{"other":1}`} {
		h.expect(h.do("POST", "/web/v1/workspaces/ws_l/api-keys/"+k.APIKeyID+"/roll", "admin", body), envelope.BadRequest)
	}

	// Revoke is idempotent and the key is rejected at once.
	r = h.do("DELETE", "/web/v1/workspaces/ws_l/api-keys/"+k.APIKeyID, "admin", "")
	h.expect(r, envelope.OK)
	var revoked keyObj
	r.data(t, &revoked)
	if revoked.Status != "REVOKED" || !timeRe.MatchString(revoked.RevokedAt) || revoked.Secret != "" {
		t.Fatalf("revoke %s", r.raw)
	}
	r = h.do("DELETE", "/web/v1/workspaces/ws_l/api-keys/"+k.APIKeyID, "admin", "")
	h.expect(r, envelope.OK)
	var again keyObj
	r.data(t, &again)
	if again.RevokedAt != revoked.RevokedAt {
		t.Fatalf("second revoke moved revokedAt: %s", r.raw)
	}
	if v := h.verify(rolled2.Secret, "", []string{"a:b"}); v.Allow || v.DenyCode != "4012" || v.APIKeyID != "" {
		t.Fatalf("revoked key: %+v", v)
	}
	h.expect(h.do("POST", "/web/v1/workspaces/ws_l/api-keys/"+k.APIKeyID+"/roll", "admin", ""), envelope.BadRequest)
	var got keyObj
	r = h.do("GET", "/web/v1/workspaces/ws_l/api-keys/"+k.APIKeyID, "admin", "")
	r.data(t, &got)
	if got.Status != "REVOKED" || got.SecretHint != rolled2.SecretHint {
		t.Fatalf("get %s", r.raw)
	}

	// Exactly one event per change, newest first, never a secret.
	r = h.do("GET", "/web/v1/workspaces/ws_l/api-key-events?apiKeyId="+k.APIKeyID, "admin", "")
	var evs struct {
		Items []struct {
			Action string          `json:"action"`
			Actor  json.RawMessage `json:"actor"`
		} `json:"items"`
	}
	r.data(t, &evs)
	var actions []string
	for _, e := range evs.Items {
		actions = append(actions, e.Action)
	}
	if fmt.Sprint(actions) != "[REVOKED ROLLED ROLLED CREATED]" || string(evs.Items[0].Actor) != `{"admin":true}` {
		t.Fatalf("events %s", r.raw)
	}
	for _, s := range []string{k.Secret, rolled.Secret, rolled2.Secret} {
		if strings.Contains(string(r.raw), s) {
			t.Fatal("event leaks a secret")
		}
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	h := start(t)
	live := h.create("ws_v", `{"name":"live","scopes":["payment:read","payment:write"],"ipWhitelist":["203.0.113.0/24","2001:db8::/32"]}`)
	open := h.create("ws_v", `{"name":"open","scopes":["payment:read"]}`)
	zero := h.create("ws_v", `{"name":"zero"}`)
	test := h.create("ws_v", `{"name":"test","mode":2,"scopes":["payment:read"]}`)
	badSum := live.Secret[:len(live.Secret)-1] + string("0123456789"[(strings.IndexByte("0123456789", live.Secret[len(live.Secret)-1])+1+10)%10])
	unknown := string(apikey.NewSecret(apikey.Live))
	tests := []struct {
		name, key, ip string
		scopes        []string
		modes         []string
		allow         bool
		deny          string
		facts         bool
	}{
		{"allow in whitelist", live.Secret, "203.0.113.7", []string{"payment:read"}, nil, true, "", true},
		{"allow every required scope", live.Secret, "203.0.113.7", []string{"payment:read", "payment:write"}, nil, true, "", true},
		{"allow ipv4-mapped client", live.Secret, "::ffff:203.0.113.7", []string{"payment:read"}, nil, true, "", true},
		{"allow ipv6 client", live.Secret, "2001:db8::5", []string{"payment:read"}, nil, true, "", true},
		{"ip outside whitelist", live.Secret, "198.51.100.1", []string{"payment:read"}, nil, false, "4034", true},
		{"no client ip: caller checks", live.Secret, "", []string{"payment:read"}, nil, true, "", true},
		{"missing scope", live.Secret, "203.0.113.7", []string{"payment:refund"}, nil, false, "4033", true},
		{"no required scopes", open.Secret, "", []string{}, nil, false, "4033", true},
		{"zero-scope key", zero.Secret, "", []string{"payment:read"}, nil, false, "4033", true},
		{"test key on live route", test.Secret, "", []string{"payment:read"}, nil, false, "4035", true},
		{"test key on test route", test.Secret, "", []string{"payment:read"}, []string{"LIVE", "TEST"}, true, "", true},
		{"mode checked before scope", test.Secret, "", []string{"nope:x"}, nil, false, "4035", true},
		{"unknown key", unknown, "", []string{"payment:read"}, nil, false, "4012", false},
		{"bad checksum", badSum, "", []string{"payment:read"}, nil, false, "4012", false},
		{"malformed", "sk_live_short", "", []string{"payment:read"}, nil, false, "4012", false},
		{"empty key", "", "", []string{"payment:read"}, nil, false, "4012", false},
		{"key id is not a secret", live.APIKeyID, "", []string{"payment:read"}, nil, false, "4012", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := h.with(t)
			v := h.verify(tc.key, tc.ip, tc.scopes, tc.modes...)
			if v.Allow != tc.allow || v.DenyCode != tc.deny || (v.APIKeyID != "") != tc.facts {
				t.Fatalf("verify = %+v", v)
			}
		})
	}
	v := h.verify(live.Secret, "", []string{"payment:read"})
	if v.WorkspaceID != "ws_v" || v.Mode != "LIVE" || fmt.Sprint(v.IPWhitelist) != "[203.0.113.0/24 2001:db8::/32]" || len(v.Scopes) != 2 {
		t.Fatalf("facts %+v", v)
	}
	// Without the gateway secret: 4010.
	h.expect(h.do("POST", "/internal/v1/verify", "", `{"key":"x"}`), envelope.Unauthorized)
	h.expect(h.do("POST", "/internal/v1/verify", "admin", `{"key":"x"}`), envelope.Unauthorized)
	h.expect(h.do("GET", "/internal/v1/verify", "Bearer "+string(gwSecret), ""), envelope.MethodNotAllowed)
	h.expect(h.do("POST", "/internal/v1/verify", "Bearer "+string(gwSecret), `{"key":1}`), envelope.BadRequest)
	h.expect(h.do("POST", "/internal/v1/verify", "Bearer "+string(gwSecret), `{"key":"x","allowedModes":["SANDBOX"]}`), envelope.BadRequest)
	// Expiry. The key is made here, not with the others: the table above
	// can take over a second on a loaded machine, and expiresAt is whole
	// seconds, so a key made first could expire before it is checked.
	expiresAt := time.Now().Add(3 * time.Second).Truncate(time.Second)
	soon := h.create("ws_v", fmt.Sprintf(`{"name":"soon","scopes":["payment:read"],"expiresAt":%q}`, expiresAt.UTC().Format(time.RFC3339)))
	if !h.verify(soon.Secret, "", []string{"payment:read"}).Allow {
		t.Fatal("key denied before its expiry")
	}
	time.Sleep(time.Until(expiresAt.Add(100 * time.Millisecond)))
	if v := h.verify(soon.Secret, "", []string{"payment:read"}); v.Allow || v.DenyCode != "4012" {
		t.Fatalf("expired key: %+v", v)
	}
	r := h.do("GET", "/web/v1/workspaces/ws_v/api-keys/"+soon.APIKeyID, "admin", "")
	var k keyObj
	r.data(t, &k)
	if k.Status != "EXPIRED" {
		t.Fatalf("status %s", r.raw)
	}
	// Metrics count decisions by code and never show a key.
	m := h.do("GET", "/metrics", "", "")
	for _, want := range []string{`keygate_verify_total{code="2000"}`, `keygate_verify_total{code="4012"}`, `keygate_verify_total{code="4034"}`, `keygate_management_requests_total{code="2000"}`, `keygate_store_seconds_bucket{op="lookup"`} {
		if !strings.Contains(string(m.raw), want) {
			t.Fatalf("metrics lack %s:\n%s", want, m.raw)
		}
	}
	for _, s := range []string{live.Secret, open.Secret, unknown, string(gwSecret), string(adminToken)} {
		if strings.Contains(string(m.raw), s) || strings.Contains(h.logs.String(), s) {
			t.Fatal("a secret reached metrics or logs")
		}
	}
}

func TestStorageFullAndUnavailable(t *testing.T) {
	t.Parallel()
	small, err := store.OpenBolt(filepath.Join(t.TempDir(), "small.db"), store.BoltOptions{MaxSize: 192 << 10})
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, func(c *sidecar.Config) { c.Store = small })
	var full bool
	for i := 0; i < 3000 && !full; i++ {
		r := h.do("POST", "/web/v1/workspaces/ws_f/api-keys", "admin", fmt.Sprintf(`{"name":"%s","scopes":["a:b"]}`, strings.Repeat("x", 120)))
		switch r.env.Code {
		case envelope.OK:
		case envelope.StorageFull:
			full = true
			if r.status != 507 || r.env.Message != "Key storage full" {
				t.Fatalf("full: %s", r.raw)
			}
		default:
			t.Fatalf("create: %s", r.raw)
		}
	}
	if !full {
		t.Fatal("store never filled")
	}
	// Reads still work when full.
	h.expect(h.do("GET", "/web/v1/workspaces/ws_f/api-keys?limit=1", "admin", ""), envelope.OK)

	// A closed store answers 503/5030 and readiness fails.
	b, err := store.OpenBolt(t.TempDir()+"/c.db", store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h2 := start(t, func(c *sidecar.Config) { c.Store = b })
	if r := h2.do("GET", "/readyz", "", ""); r.status != 200 {
		t.Fatalf("readyz %d", r.status)
	}
	b.Close()
	h2.expect(h2.do("GET", "/readyz", "", ""), envelope.Unavailable)
	h2.expect(h2.do("POST", "/web/v1/workspaces/ws/api-keys", "admin", `{"name":"k"}`), envelope.Unavailable)
	h2.expect(h2.do("POST", "/internal/v1/verify", "Bearer "+string(gwSecret), fmt.Sprintf(`{"key":%q,"requiredScopes":["a:b"]}`, apikey.NewSecret(apikey.Live).Reveal())), envelope.Unavailable)
}

// A bad config is refused with the reason, and the store handed over is
// closed: the sidecar owns it from Start on.
func TestStartRefusesBadConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		cfg   sidecar.Config
		store bool
		want  string
	}{
		{"no store", sidecar.Config{Listen: "127.0.0.1:0", GatewaySecret: gwSecret}, false, "key store is required"},
		{"no gateway secret", sidecar.Config{Listen: "127.0.0.1:0"}, true, "gateway secret is required"},
		{"short gateway secret", sidecar.Config{Listen: "127.0.0.1:0", GatewaySecret: []byte("short")}, true, "at least 16 bytes"},
		{"admin token equal to the gateway secret", sidecar.Config{Listen: "127.0.0.1:0", GatewaySecret: gwSecret, AdminToken: gwSecret}, true, "must differ"},
		{"bad listen", sidecar.Config{Listen: "256.0.0.1:1", GatewaySecret: gwSecret}, true, "listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b *store.Bolt
			if tc.store {
				b = openBolt(t, filepath.Join(t.TempDir(), "k.db"))
				tc.cfg.Store = b
			}
			_, err := sidecar.Start(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("start: %v", err)
			}
			if b != nil {
				if err := b.Ready(t.Context()); !errors.Is(err, store.ErrClosed) {
					t.Fatalf("the store of a refused start is still open: %v", err)
				}
			}
		})
	}
}

func TestLoadScopes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.WriteFile(dir+"/ok", []byte("# catalog\npayment:read\n\npayment:write\n"), 0o600)
	os.WriteFile(dir+"/bad", []byte("payment:read\nNope\n"), 0o600)
	m, err := sidecar.LoadScopes(dir + "/ok")
	if err != nil || len(m) != 2 || !m["payment:write"] {
		t.Fatalf("load: %v %v", m, err)
	}
	if _, err := sidecar.LoadScopes(dir + "/bad"); err == nil || !strings.Contains(err.Error(), ":2:") {
		t.Fatalf("bad catalog: %v", err)
	}
}
