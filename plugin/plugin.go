package plugin

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/Kong/go-pdk"
	"github.com/Kong/go-pdk/client"
	"github.com/keygate/keygate/internal/envelope"
)

var timeNow = time.Now

// Version is the plugin version Kong sees.
const Version = "0.1.0"

// Priority runs keygate with the authentication plugins (key-auth is 1250,
// jwt 1450), before rate-limiting (910) and the logging plugins, so they see
// the credential it authenticates.
const Priority = 1260

// MaxHeaders is how many request headers are read (Kong's maximum). A
// request with this many header lines or more (Host included) is refused
// with 400/4000: Kong would hand over only the first MaxHeaders.
const MaxHeaders = 1000

// kongAPI is the part of the PDK the plugin uses; every method is one round
// trip to Kong.
type kongAPI interface {
	headers() (map[string][]string, error)
	path() (string, error)
	method() (string, error)
	forwardedIP() (string, error)
	authenticate(credentialID string) error
	setHeaders(map[string][]string) error
	clearHeader(name string) error
	exit(status int, body []byte, headers map[string][]string)
	// log writes one line through kong.log (failure paths only; konglog.go).
	log(level kongLevel, msg string)
}

type pdkAPI struct{ k *pdk.PDK }

func (a pdkAPI) headers() (map[string][]string, error) { return a.k.Request.GetHeaders(MaxHeaders) }
func (a pdkAPI) path() (string, error)                 { return a.k.Request.GetPath() }
func (a pdkAPI) method() (string, error)               { return a.k.Request.GetMethod() }
func (a pdkAPI) forwardedIP() (string, error)          { return a.k.Client.GetForwardedIp() }
func (a pdkAPI) authenticate(id string) error {
	// No consumer: keygate keys are not Kong consumers. Kong requires a
	// consumer or a credential; the credential's id is the apiKeyId, which
	// rate-limiting (limit_by: credential) and the logging plugins use.
	return a.k.Client.Authenticate(nil, &client.AuthenticatedCredential{Id: id})
}
func (a pdkAPI) setHeaders(h map[string][]string) error { return a.k.ServiceRequest.SetHeaders(h) }
func (a pdkAPI) clearHeader(name string) error          { return a.k.ServiceRequest.ClearHeader(name) }
func (a pdkAPI) exit(status int, body []byte, h map[string][]string) {
	a.k.Response.Exit(status, body, h)
}
func (a pdkAPI) log(level kongLevel, msg string) {
	switch level {
	case kongWarn:
		_ = a.k.Log.Warn(msg)
	case kongNotice:
		_ = a.k.Log.Notice(msg)
	default:
		_ = a.k.Log.Err(msg)
	}
}

// Access is the handler of Kong's access phase.
func (c *Config) Access(kong *pdk.PDK) { c.access(pdkAPI{kong}) }

// call is one request being handled.
type call struct {
	k      kongAPI
	in     *instance
	reqID  string
	genID  bool // reqID was generated here: set it upstream
	exited bool

	// The client IP, asked of Kong at most once (clientIP).
	ip      netip.Addr
	ipOK    bool
	ipAsked bool
}

func (c *Config) access(k kongAPI) {
	r := &call{k: k}
	defer func() {
		if v := recover(); v != nil {
			why := sanitizePanic(v)
			logger().Error("keygate: panic in access; answering 500/5000",
				"panic", why, "request_id", r.reqID, "stack", string(debug.Stack()))
			if !r.exited {
				r.kongLog(kongErr, "panic", "keygate: panic in the access handler, answered "+outcome(envelope.Internal)+": "+why+" (the stack is in the plugin's stderr, logged by Kong at info)")
				r.reject(envelope.Internal)
			}
		}
	}()
	h, err := k.headers()
	if err != nil {
		if notUTF8(err) {
			// Kong hands header values over as raw bytes; go-pdk refuses to
			// decode a string that is not UTF-8. The client's fault: 400.
			r.kongLog(kongWarn, "utf8", "keygate: a request's headers are not valid UTF-8 (go-pdk cannot decode them); answered "+outcome(envelope.BadRequest))
			r.refuseWith(slog.LevelInfo, "keygate: request rejected", envelope.BadRequest, "request headers must be valid UTF-8", nil,
				"reason", "request headers are not valid UTF-8")
			return
		}
		logger().Error("keygate: kong.request.get_headers failed", "err", err.Error())
		r.kongLog(kongErr, "pdk", "keygate: PDK call kong.request.get_headers failed, answered "+outcome(envelope.Internal)+": "+err.Error())
		r.reject(envelope.Internal)
		return
	}
	r.reqID, r.genID = requestID(h)
	in, err := c.instance()
	if err != nil {
		msg := "keygate: invalid plugin configuration (route_role " + strconv.Quote(c.RouteRole) + "); every request of this route answers " + outcome(envelope.Internal) + ": " + problemList(err)
		r.kongLog(kongErr, msg, msg)
		r.reject(envelope.Internal)
		return
	}
	r.in = in
	if n := headerValues(h); n >= MaxHeaders {
		// Kong hands over only the first MaxHeaders header lines: a second
		// key, or a client X-Keygate-* header to strip, could hide behind
		// them. Refuse rather than decide on part of the request.
		r.refuseWith(slog.LevelInfo, "keygate: request rejected", envelope.BadRequest,
			"too many request headers (at most "+strconv.Itoa(MaxHeaders-1)+")", nil,
			"reason", "too many request headers", "headers", n)
		return
	}
	switch in.role {
	case RoleManage:
		r.manage(h)
	case RoleEnforce:
		r.enforce(h)
	default:
		r.reject(envelope.Internal)
	}
}

// refuse logs msg at level with the code it sends and attrs, then answers
// with the envelope of code: the code in the log line is the code sent.
func (r *call) refuse(level slog.Level, msg string, code envelope.Code, attrs ...any) {
	r.refuseWith(level, msg, code, "", nil, attrs...)
}

// refuseWith is refuse with a message ("" = the code's) and extra headers.
func (r *call) refuseWith(level slog.Level, msg string, code envelope.Code, message string, extra map[string][]string, attrs ...any) {
	if l := logger(); l.Enabled(context.Background(), level) {
		args := make([]any, 0, len(attrs)+4)
		args = append(args, "code", string(code))
		args = append(args, attrs...)
		l.Log(context.Background(), level, msg, append(args, "request_id", r.reqID)...)
	}
	r.rejectMessage(code, message, extra)
}

// outcome is "503/5030" of code: log lines say what a request was
// answered from the code sent, never a typed copy.
func outcome(code envelope.Code) string {
	return strconv.Itoa(code.Status()) + "/" + string(code)
}

// reject answers the request with the envelope of code; it is the only way
// the plugin ends a request itself.
func (r *call) reject(code envelope.Code) {
	r.rejectWith(code, nil)
}

func (r *call) rejectWith(code envelope.Code, extra map[string][]string) {
	r.rejectMessage(code, "", extra)
}

// rejectMessage answers with the envelope of code and message ("" = the
// code's message) and extra headers.
func (r *call) rejectMessage(code envelope.Code, message string, extra map[string][]string) {
	if r.reqID == "" {
		r.reqID = envelope.NewRequestID()
	}
	now := timeNow()
	if r.in != nil {
		now = r.in.now()
	}
	body := envelope.Append(make([]byte, 0, 192), now, code, message, r.reqID, nil)
	h := map[string][]string{
		"Content-Type": {"application/json"},
		"X-Request-Id": {r.reqID},
	}
	if r.in != nil && r.in.role == RoleManage {
		// Like every answer of the key service's management API.
		h["Cache-Control"] = []string{"no-store"}
		h["X-Content-Type-Options"] = []string{"nosniff"}
	}
	for k, v := range extra {
		h[k] = v
	}
	r.exited = true
	r.k.exit(code.Status(), body, h)
}

// headerValues counts the header lines get_headers returned.
func headerValues(h map[string][]string) int {
	n := 0
	for _, v := range h {
		n += len(v)
	}
	return n
}

// requestID is the client's X-Request-Id when it is sane, else a new one.
func requestID(h map[string][]string) (string, bool) {
	if v := h["x-request-id"]; len(v) > 0 && envelope.ValidRequestID(v[0]) {
		return v[0], false
	}
	return envelope.NewRequestID(), true
}

// sanitizePanic keeps a panic value out of the log when it could carry
// request data: only its type and a bounded message.
func sanitizePanic(v any) string {
	var s string
	switch x := v.(type) {
	case error:
		s = x.Error()
	case string:
		s = x
	default:
		s = "non-error panic"
	}
	if i := strings.Index(s, "sk_"); i >= 0 { // never a key, even in a panic
		s = s[:i] + "[redacted]"
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

var logPtr atomic.Pointer[slog.Logger]

func init() {
	level := slog.LevelInfo
	if os.Getenv("KEYGATE_LOG_LEVEL") == "debug" {
		level = slog.LevelDebug
	}
	logPtr.Store(slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
}

func logger() *slog.Logger { return logPtr.Load() }

// SetLogger replaces the plugin's logger (JSON to stderr by default, which
// Kong writes to its error log; $KEYGATE_LOG_LEVEL=debug logs every
// decision).
func SetLogger(l *slog.Logger) {
	if l != nil {
		logPtr.Store(l)
	}
}

// notUTF8 reports whether a PDK call failed because Kong handed over bytes
// that are not UTF-8: Kong passes header values and the decoded path as
// they came (kong/pdk/request.lua), and go-pdk's protobuf decoding refuses
// a string field that is not UTF-8. go-pdk gives no typed error for it, so
// its message is the only sign. The client's fault: 400, not 500.
func notUTF8(err error) bool { return strings.Contains(err.Error(), "invalid UTF-8") }
