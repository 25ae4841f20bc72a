package sidecar

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/internal/envelope"
)

// createRequest is a validated create body.
type createRequest struct {
	Name        string
	Scopes      []string
	Mode        apikey.Mode
	IPWhitelist []string
	ExpiresAt   int64 // Unix seconds; 0 = never
}

func badRequest(format string, args ...any) *envelope.Error {
	return envelope.Errorf(envelope.BadRequest, fmt.Sprintf(format, args...))
}

// decodeObject walks one JSON object strictly: the body must be exactly one
// object, with no duplicate keys; field is called for every member with its
// raw value and must reject names it does not know.
func decodeObject(body []byte, field func(name string, raw json.RawMessage) error) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if d, ok := tok.(json.Delim); err != nil || !ok || d != '{' {
		return badRequest("body must be a JSON object")
	}
	seen := make(map[string]bool, 8)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return badRequest("body is not valid JSON")
		}
		name, _ := tok.(string)
		if seen[name] {
			return badRequest("duplicate field %q", clip(name))
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return badRequest("%s: body is not valid JSON", clip(name))
		}
		if err := field(name, raw); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil {
		return badRequest("body is not valid JSON")
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("unexpected data after the JSON object")
	}
	return nil
}

// clip keeps user text in messages short and printable.
func clip(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

func stringList(field string, raw json.RawMessage) ([]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var out []string
	if raw[0] != '[' || json.Unmarshal(raw, &out) != nil {
		return nil, badRequest("%s must be an array of strings", field)
	}
	return out, nil
}

func decodeCreate(body []byte, catalog map[string]bool, now time.Time) (*createRequest, error) {
	req := &createRequest{Mode: apikey.Live}
	var haveName bool
	var scopes, ips []string
	err := decodeObject(body, func(name string, raw json.RawMessage) error {
		var err error
		switch name {
		case "name":
			if raw[0] != '"' {
				if isNull(raw) {
					return badRequest("name is required")
				}
				return badRequest("name must be a string")
			}
			var s string
			if !utf8.Valid(raw) || json.Unmarshal(raw, &s) != nil || strings.ContainsRune(s, utf8.RuneError) {
				return badRequest("name must be valid UTF-8")
			}
			req.Name, haveName = s, true
		case "scopes":
			scopes, err = stringList("scopes", raw)
		case "ipWhitelist":
			ips, err = stringList("ipWhitelist", raw)
		case "mode":
			switch string(raw) {
			case "null", "1":
				req.Mode = apikey.Live
			case "2":
				req.Mode = apikey.Test
			default:
				return badRequest("mode must be the integer 1 (LIVE) or 2 (TEST)")
			}
		case "expiresAt":
			if isNull(raw) {
				return nil
			}
			var s string
			if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
				return badRequest("expiresAt must be an RFC 3339 time string")
			}
			t, perr := time.Parse(time.RFC3339, s)
			if perr != nil {
				return badRequest("expiresAt must be an RFC 3339 time, e.g. 2026-03-21T00:00:00Z")
			}
			if !t.After(now) {
				return badRequest("expiresAt must be in the future")
			}
			req.ExpiresAt = t.Unix()
		default:
			return badRequest("unknown field %q", clip(name))
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if !haveName {
		return nil, badRequest("name is required")
	}
	if req.Name, err = apikey.NormalizeName(req.Name); err != nil {
		return nil, asBadRequest(err)
	}
	if req.Scopes, err = apikey.NormalizeScopes(scopes, catalog); err != nil {
		return nil, asBadRequest(err)
	}
	if req.IPWhitelist, _, err = apikey.ParseIPWhitelist(ips); err != nil {
		return nil, asBadRequest(err)
	}
	return req, nil
}

func asBadRequest(err error) error {
	var fe *apikey.FieldError
	if errors.As(err, &fe) {
		return badRequest("%s", fe.Msg)
	}
	return err
}

// MaxRollWindow is the longest an old secret may stay valid after a roll.
const MaxRollWindow = 7 * 24 * 3600

// decodeRoll reads a roll body; an empty body means a window of 0.
func decodeRoll(body []byte) (int64, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return 0, nil
	}
	var window int64
	err := decodeObject(body, func(name string, raw json.RawMessage) error {
		if name != "expireOldInSeconds" {
			return badRequest("unknown field %q", clip(name))
		}
		if isNull(raw) {
			return nil
		}
		var n int64
		if bytes.ContainsAny(raw, ".eE") || json.Unmarshal(raw, &n) != nil || n < 0 || n > MaxRollWindow {
			return badRequest("expireOldInSeconds must be an integer from 0 to %d", MaxRollWindow)
		}
		window = n
		return nil
	})
	return window, err
}
