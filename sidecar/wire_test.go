package sidecar

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/internal/envelope"
)

// FuzzVerifyAnswerWire checks the verify answer's hand-written encoder
// (appendVerifyData with appendFacts, the hot path's) against its type.
// Property: for any decision and any facts a key can hold, the bytes are
// JSON with exactly the members, and the values, that encoding/json writes
// for the apikey.VerifyResult (or VerifyDenied, for 4012) of those facts;
// and they decode into that type strictly (no unknown member) to the same
// value. The whitelist's canonical strings come from ParseIPWhitelist (the
// management API's), not from the encoder.
func FuzzVerifyAnswerWire(f *testing.F) {
	f.Add(uint8(apikey.Allow), "ws_1", true, "payment:read,payment:write", "10.0.0.0/8,2001:db8::1", int64(0), uint16(999))
	f.Add(uint8(apikey.DenyInvalid), "ws", false, "", "", int64(0), uint16(0))
	f.Add(uint8(apikey.DenyMode), "w\"s<\u2028>", false, "a:b", "::ffff:10.1.2.3", int64(1893456000), uint16(299))
	f.Add(uint8(apikey.DenyScope), "\xff", true, "", "192.168.0.0/16,192.168.0.0/16", int64(1), uint16(0))
	f.Add(uint8(apikey.DenyIP), "ws-9", true, "x:y,é:\\", "1.2.3.4", int64(253402300799), uint16(65535))
	f.Fuzz(func(t *testing.T, dec uint8, ws string, live bool, scopeList, ipList string, exp int64, cache uint16) {
		d := apikey.Decision(dec % 5)
		if exp < 0 || exp > 253402300799 || ws == "" { // RFC 3339: years 0000–9999; a key has a workspace
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
		cacheMs := int(cache) + 1 // the sidecar's is 1..RevocationBound, never 0
		facts := apikey.Facts{APIKeyID: apikey.NewID(mode), WorkspaceID: ws, Mode: mode,
			ExpiresAt: exp, Scopes: scopes, IPWhitelist: prefixes}

		var want any = apikey.VerifyDenied{DenyCode: string(envelope.InvalidKey), CacheMs: cacheMs}
		factsJSON := ""
		if d != apikey.DenyInvalid {
			r := apikey.VerifyResult{Allow: d == apikey.Allow, DenyCode: string(envelope.DenyCode(d)),
				APIKeyID: facts.APIKeyID, WorkspaceID: ws, Mode: mode.String(),
				Scopes: scopes, IPWhitelist: canon, CacheMs: cacheMs}
			if exp != 0 {
				r.ExpiresAt = time.Unix(exp, 0).UTC().Format(time.RFC3339)
			}
			want = r
			factsJSON = string(appendFacts(nil, &facts))
		}
		hand := appendVerifyData(nil, d, factsJSON, cacheMs)
		std, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		var h, s any
		if err := json.Unmarshal(hand, &h); err != nil {
			t.Fatalf("hand-written answer is not JSON: %v\n%s", err, hand)
		}
		if err := json.Unmarshal(std, &s); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(h, s) {
			t.Fatalf("members differ\nhand %s\njson %s", hand, std)
		}
		var fromHand, fromStd apikey.VerifyResult
		dec2 := json.NewDecoder(strings.NewReader(string(hand)))
		dec2.DisallowUnknownFields()
		if err := dec2.Decode(&fromHand); err != nil {
			t.Fatalf("hand-written answer does not decode as VerifyResult: %v\n%s", err, hand)
		}
		if err := json.Unmarshal(std, &fromStd); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(fromHand, fromStd) {
			t.Fatalf("decoded answers differ\nhand %+v\njson %+v", fromHand, fromStd)
		}
	})
}
