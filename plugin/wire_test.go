package plugin

import (
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/internal/envelope"
)

// verifyEnvelope wraps the data of a verify answer as encoding/json writes
// the envelope the sidecar sends.
func verifyEnvelope(t testing.TB, data any) []byte {
	t.Helper()
	d, err := json.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(envelope.Envelope{Version: envelope.Version, Timestamp: 1, Success: true,
		Code: envelope.OK, Message: "SUCCESS", RequestID: "r", Data: d})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzVerifyAnswerParse: for any facts a key can hold (valid UTF-8 text)
// and any decision,
// the plugin's parser reads the apikey.VerifyResult that encoding/json
// writes for them back to those facts (none for 4012) and their cacheMs.
// The sidecar's hand-written encoder is held to the same type by
// sidecar.FuzzVerifyAnswerWire, and to this parser by
// TestVerifyWireRealSidecar.
func FuzzVerifyAnswerParse(f *testing.F) {
	f.Add(uint8(apikey.Allow), "ws_1", true, "payment:read,payment:write", "10.0.0.0/8,2001:db8::1", int64(0), uint16(999))
	f.Add(uint8(apikey.DenyInvalid), "ws", false, "", "", int64(0), uint16(0))
	f.Add(uint8(apikey.DenyMode), "w\"s<\u2028>", false, "a:b", "::ffff:10.1.2.3", int64(1893456000), uint16(299))
	f.Add(uint8(apikey.DenyIP), "ws-9", true, "x:y,é:\\", "1.2.3.4,1.2.3.4/32", int64(253402300799), uint16(65535))
	f.Fuzz(func(t *testing.T, dec uint8, ws string, live bool, scopeList, ipList string, exp int64, cache uint16) {
		d := apikey.Decision(dec % 5)
		if exp < 0 || exp > 253402300799 || ws == "" || !utf8.ValidString(ws) || !utf8.ValidString(scopeList) {
			t.Skip()
		}
		var raw []string
		if ipList != "" {
			raw = strings.Split(ipList, ",")
		}
		canon, prefixes, err := apikey.ParseIPWhitelist(raw)
		if err != nil {
			t.Skip() // a key never holds an invalid whitelist
		}
		scopes := []string{}
		if scopeList != "" {
			scopes = strings.Split(scopeList, ",")
		}
		mode := apikey.Test
		if live {
			mode = apikey.Live
		}
		want := &apikey.Facts{APIKeyID: apikey.NewID(mode), WorkspaceID: ws, Mode: mode,
			ExpiresAt: exp, Scopes: scopes, IPWhitelist: prefixes}
		if len(prefixes) == 0 {
			want.IPWhitelist = nil
		}
		var data any = apikey.VerifyDenied{DenyCode: string(envelope.InvalidKey), CacheMs: int(cache)}
		if d == apikey.DenyInvalid {
			want = nil
		} else {
			r := apikey.VerifyResult{Allow: d == apikey.Allow, DenyCode: string(envelope.DenyCode(d)),
				APIKeyID: want.APIKeyID, WorkspaceID: ws, Mode: mode.String(),
				Scopes: scopes, IPWhitelist: canon, CacheMs: int(cache)}
			if exp != 0 {
				r.ExpiresAt = time.Unix(exp, 0).UTC().Format(time.RFC3339)
			}
			data = r
		}
		got, maxAge, err := parseVerifyAnswer(verifyEnvelope(t, data))
		if err != nil {
			t.Fatalf("parse: %v", err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("parsed %+v\nwant   %+v", got, want)
		}
		if maxAge != time.Duration(cache)*time.Millisecond {
			t.Fatalf("maxAge %v, want %d ms", maxAge, cache)
		}
	})
}

// TestVerifyWireRealSidecar reads the answers of the real sidecar (its
// hand-written encoder) with the plugin's parser, and the same answers as
// encoding/json writes their apikey.VerifyResult from the key the
// management API created: both must parse to the same facts, for every
// decision and key shape.
func TestVerifyWireRealSidecar(t *testing.T) {
	t.Parallel()
	sc := startSidecar(t)
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second).Format(time.RFC3339)
	for _, tc := range []struct {
		name, ws, body, verify string
		deny                   envelope.Code
	}{
		{"allow", "ws1", `{"name":"a","scopes":["payment:read","payment:write"]}`, `"requiredScopes":["payment:read"]`, ""},
		{"allow with whitelist and expiry", "ws2",
			`{"name":"b","scopes":["payment:read"],"ipWhitelist":["10.0.0.0/8","2001:db8::1","::ffff:192.0.2.7"],"expiresAt":"` + exp + `"}`,
			`"clientIp":"10.1.2.3","requiredScopes":["payment:read"]`, ""},
		{"mode", "ws1", `{"name":"c","scopes":["payment:read"],"mode":2}`, `"requiredScopes":["payment:read"],"allowedModes":["LIVE"]`, envelope.ModeDenied},
		{"scope of a zero-scope key", "ws1", `{"name":"d"}`, `"requiredScopes":["payment:read"]`, envelope.ScopeDenied},
		{"ip", "ws3", `{"name":"e","scopes":["payment:read"],"ipWhitelist":["10.0.0.0/8"]}`, `"clientIp":"11.0.0.1","requiredScopes":["payment:read"]`, envelope.IPDenied},
		{"unknown", "", "", `"requiredScopes":["payment:read"]`, envelope.InvalidKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var created struct {
				createdKey
				Mode        string   `json:"mode"`
				Scopes      []string `json:"scopes"`
				IPWhitelist []string `json:"ipWhitelist"`
				ExpiresAt   string   `json:"expiresAt"`
			}
			secret := apikey.NewSecret(apikey.Live).Reveal()
			if tc.body != "" {
				env := sc.do(t, http.MethodPost, "/web/v1/workspaces/"+tc.ws+"/api-keys", tc.body)
				if err := json.Unmarshal(env.Data, &created); err != nil {
					t.Fatal(err)
				}
				secret = created.Secret
			}
			req, _ := http.NewRequest(http.MethodPost, "http://sidecar"+apikey.VerifyPath,
				strings.NewReader(`{"key":"`+secret+`",`+tc.verify+`}`))
			req.Header.Set("Authorization", "Bearer "+gwSecret)
			resp, err := sc.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			hand, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			fromHand, ageHand, err := parseVerifyAnswer(hand)
			if err != nil {
				t.Fatalf("parse the sidecar's answer: %v\n%s", err, hand)
			}
			var ans struct{ Data apikey.VerifyResult }
			json.Unmarshal(hand, &ans)

			var data any = apikey.VerifyDenied{DenyCode: string(envelope.InvalidKey), CacheMs: ans.Data.CacheMs}
			if tc.deny != envelope.InvalidKey {
				data = apikey.VerifyResult{Allow: tc.deny == "", DenyCode: string(tc.deny), APIKeyID: created.APIKeyID,
					WorkspaceID: tc.ws, Mode: created.Mode, Scopes: created.Scopes, IPWhitelist: created.IPWhitelist,
					ExpiresAt: created.ExpiresAt, CacheMs: ans.Data.CacheMs}
			}
			fromType, ageType, err := parseVerifyAnswer(verifyEnvelope(t, data))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(fromHand, fromType) || ageHand != ageType || ageHand <= 0 {
				t.Fatalf("sidecar's answer %s\nparsed %+v (%v)\nwant   %+v (%v)", hand, fromHand, ageHand, fromType, ageType)
			}
			if ans.Data.DenyCode != string(tc.deny) || ans.Data.Allow != (tc.deny == "") {
				t.Fatalf("decision %v %q, want %q", ans.Data.Allow, ans.Data.DenyCode, tc.deny)
			}
			if tc.deny != envelope.InvalidKey && len(fromHand.IPWhitelist) != len(created.IPWhitelist) {
				t.Fatalf("whitelist %v, created %v", fromHand.IPWhitelist, created.IPWhitelist)
			}
		})
	}
}
