// Package envelope is keygate's response envelope and its table of outcome codes.
//
// Every body the sidecar sends and every rejection the plugin sends is one
// envelope:
//
//	{"version":"1.3.0","timestamp":1709337600000,"success":true,"code":"2000",
//	 "message":"SUCCESS","requestId":"…","data":{…}}
//
// Invariants: a Code maps to exactly one HTTP status; data appears only on
// success; messages of 5xx codes never carry details (those go to the log).
// Each access decision of apikey.Decide has exactly one code, in DenyCode:
// the sidecar's verify answer, its metrics and the plugin's rejection all
// take it from there (envelope imports apikey; apikey knows no codes).
package envelope

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// Version is the envelope version of the API contract.
const Version = "1.3.0"

// Code is one outcome of the API, as a four-digit string.
type Code string

// Every outcome of the table in docs/CONTRACT.md §3.
const (
	OK               Code = "2000"
	BadRequest       Code = "4000"
	Unauthorized     Code = "4010"
	KeyRequired      Code = "4011"
	InvalidKey       Code = "4012"
	NotOwner         Code = "4030"
	TestModePortal   Code = "4031"
	UnknownPortal    Code = "4032"
	ScopeDenied      Code = "4033"
	IPDenied         Code = "4034"
	ModeDenied       Code = "4035"
	NotFound         Code = "4040"
	MethodNotAllowed Code = "4050"
	TooLarge         Code = "4130"
	UnsupportedMedia Code = "4150"
	TooManyRequests  Code = "4290"
	Internal         Code = "5000"
	Unavailable      Code = "5030"
	Timeout          Code = "5040"
	StorageFull      Code = "5070"
)

type codeInfo struct {
	status  int
	message string
}

var codes = map[Code]codeInfo{
	OK:               {200, "SUCCESS"},
	BadRequest:       {400, "Invalid request"},
	Unauthorized:     {401, "Invalid or expired token"},
	KeyRequired:      {401, "API key required"},
	InvalidKey:       {401, "Invalid API key"},
	NotOwner:         {403, "Only workspace owner can manage API keys"},
	TestModePortal:   {403, "TEST keys can only be created from the PARTNER portal"},
	UnknownPortal:    {403, "Unknown portal"},
	ScopeDenied:      {403, "API key lacks required scope"},
	IPDenied:         {403, "Client IP not allowed"},
	ModeDenied:       {403, "API key mode not allowed on this route"},
	NotFound:         {404, "API key not found"},
	MethodNotAllowed: {405, "Method not allowed"},
	TooLarge:         {413, "Request body too large"},
	UnsupportedMedia: {415, "Content-Type must be application/json"},
	TooManyRequests:  {429, "Too many requests"},
	Internal:         {500, "Internal error"},
	Unavailable:      {503, "Key service unavailable"},
	Timeout:          {504, "Key service timeout"},
	StorageFull:      {507, "Key storage full"},
}

// okInfo is codes[OK], for the answers that need no map lookup.
var okInfo = codes[OK]

// Codes lists every code of the table, for tests and documentation.
func Codes() []Code {
	out := make([]Code, 0, len(codes))
	for c := range codes {
		out = append(out, c)
	}
	return out
}

// Status is the HTTP status of c; unknown codes are 500.
func (c Code) Status() int {
	if c == OK { // most answers: no map lookup
		return okInfo.status
	}
	if i, ok := codes[c]; ok {
		return i.status
	}
	return 500
}

// Message is the contract's message for c (docs/CONTRACT.md §3).
func (c Code) Message() string {
	if c == OK {
		return okInfo.message
	}
	if i, ok := codes[c]; ok {
		return i.message
	}
	return codes[Internal].message
}

// Error is an outcome with a specific message (for 4000, the field and the
// rule). It is the one error type the edges turn into an envelope.
type Error struct {
	Code Code
	Msg  string // empty: the code's message
}

func (e *Error) Error() string { return string(e.Code) + " " + e.Message() }

// Message is the message to send.
func (e *Error) Message() string {
	if e.Msg != "" && e.Code.Status() < 500 {
		return e.Msg
	}
	return e.Code.Message()
}

// Errorf builds an *Error with code c and message msg.
func Errorf(c Code, msg string) *Error { return &Error{Code: c, Msg: msg} }

// Append appends one envelope to dst. data is the JSON of data (nil for
// none); it is written only when code is a success. message empty means the
// code's message. now is the timestamp.
func Append(dst []byte, now time.Time, code Code, message, requestID string, data []byte) []byte {
	if message == "" {
		message = code.Message()
	}
	ok := code == OK
	dst = append(dst, `{"version":"`+Version+`","timestamp":`...)
	dst = strconv.AppendInt(dst, now.UnixMilli(), 10)
	if ok {
		dst = append(dst, `,"success":true,"code":"`...)
	} else {
		dst = append(dst, `,"success":false,"code":"`...)
	}
	dst = append(dst, code...)
	dst = append(dst, `","message":`...)
	dst = AppendString(dst, message)
	if requestID != "" {
		dst = append(dst, `,"requestId":`...)
		dst = AppendString(dst, requestID)
	}
	if ok && data != nil {
		dst = append(dst, `,"data":`...)
		dst = append(dst, data...)
	}
	return append(dst, '}')
}

// Body is Append into a new slice.
func Body(code Code, message, requestID string, data []byte) []byte {
	return Append(make([]byte, 0, 160+len(data)), time.Now(), code, message, requestID, data)
}

// Envelope is the decoded form, for clients and tests.
type Envelope struct {
	Version   string          `json:"version"`
	Timestamp int64           `json:"timestamp"`
	Success   bool            `json:"success"`
	Code      Code            `json:"code"`
	Message   string          `json:"message"`
	RequestID string          `json:"requestId,omitempty"`
	Data      json.RawMessage `json:"data,omitempty"`
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD;
// <, >, & and the line separators are escaped so bodies are safe to embed.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\u202`...)
			dst = append(dst, hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// ValidRequestID reports whether a client's X-Request-Id may be kept: 1–128
// visible ASCII characters other than '"' and '\\'. The plugin and the
// sidecar apply the same rule, so both log and answer the same id.
func ValidRequestID[T string | []byte](s T) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// NewRequestID returns a random UUID (version 4).
func NewRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}
