package kongemu

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	kpp "github.com/Kong/go-pdk/server/kong_plugin_protocol"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// maxRawBody caps what kong.request.get_raw_body buffers in memory.
const maxRawBody = 8 << 20

// Limits of kong.request.get_headers / get_query (Kong's MAX_HEADERS).
const (
	defaultMaxHeaders = 100
	maxMaxHeaders     = 1000
)

// exitInfo is a recorded kong.response.exit.
type exitInfo struct {
	status int
	body   []byte
	header http.Header
}

// reqState is what the PDK sees and changes for one request.
type reqState struct {
	s         *server
	r         *http.Request
	rt        *route
	path      string // normalised, escaped request path
	peer      netip.AddrPort
	fwdAddr   netip.Addr
	fwdPort   uint16
	localPort int
	start     time.Time

	// request body buffered by get_raw_body; kept across event retries
	body     []byte
	bodyRead bool
	bodyErr  error

	// reset before each event attempt
	calls     []string
	hdr       http.Header // request headers as the upstream will get them
	upHost    string
	upPath    string
	upQuery   *string
	upMethod  string
	upBody    []byte
	upBodySet bool
	respOps   []func(http.Header)
	exit      *exitInfo
	shared    map[string]*structpb.Value
	ngxCtx    map[string]*structpb.Value
	consumer  *kpp.Consumer
	cred      *kpp.AuthenticatedCredential
}

func (st *reqState) resetEvent() {
	st.calls = st.calls[:0]
	st.hdr = st.r.Header.Clone()
	if st.hdr == nil {
		st.hdr = http.Header{}
	}
	st.upHost, st.upPath, st.upQuery, st.upMethod = "", "", nil, ""
	st.upBody, st.upBodySet = nil, false
	st.respOps, st.exit = nil, nil
	st.shared = map[string]*structpb.Value{}
	st.ngxCtx = map[string]*structpb.Value{}
	st.consumer, st.cred = nil, nil
}

// pdkHandler answers one PDK method. A nil reply is sent as an empty frame.
type pdkHandler func(st *reqState, args []byte) (proto.Message, error)

// dispatch serves one PDK call; every call is counted.
func (st *reqState) dispatch(method string, args []byte) ([]byte, error) {
	st.calls = append(st.calls, method)
	h, ok := pdkMethods[method]
	if !ok {
		return nil, &PDKError{Method: method, Err: errUnsupported}
	}
	reply, err := h(st, args)
	if errors.Is(err, errExited) {
		return nil, err
	}
	if err != nil {
		return nil, &PDKError{Method: method, Err: err}
	}
	if reply == nil {
		return nil, nil
	}
	return marshalReply(reply)
}

// decode unmarshals the argument frame into a new T.
func decode[T any, PT interface {
	*T
	proto.Message
}](b []byte) (PT, error) {
	m := PT(new(T))
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("decode argument: %w", err)
	}
	return m, nil
}

func str(s string) *kpp.String { return &kpp.String{V: s} }
func num(i int) *kpp.Int       { return &kpp.Int{V: int32(i)} }

// strArg is a handler taking a String argument.
func strArg(f func(st *reqState, s string) (proto.Message, error)) pdkHandler {
	return func(st *reqState, b []byte) (proto.Message, error) {
		a, err := decode[kpp.String](b)
		if err != nil {
			return nil, err
		}
		return f(st, a.V)
	}
}

// noArg is a handler that ignores its (empty) argument.
func noArg(f func(st *reqState) (proto.Message, error)) pdkHandler {
	return func(st *reqState, _ []byte) (proto.Message, error) { return f(st) }
}

// kvSet and kvGet are the set and get of one of a request's key-value
// stores (kong.ctx.shared, ngx.ctx): a KV argument; a String argument,
// answering null for a key never set.
func kvSet(m func(*reqState) map[string]*structpb.Value) pdkHandler {
	return func(st *reqState, b []byte) (proto.Message, error) {
		a, err := decode[kpp.KV](b)
		if err != nil {
			return nil, err
		}
		m(st)[a.K] = a.V
		return nil, nil
	}
}

func kvGet(m func(*reqState) map[string]*structpb.Value) pdkHandler {
	return strArg(func(st *reqState, k string) (proto.Message, error) {
		if v := m(st)[k]; v != nil {
			return v, nil
		}
		return structpb.NewNullValue(), nil
	})
}

// headerValue turns a KV/Struct value into a header value as Kong accepts
// it: a string, a number or a boolean.
func headerValue(v *structpb.Value) (string, error) {
	var s string
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		s = k.StringValue
	case *structpb.Value_NumberValue:
		s = strconv.FormatFloat(k.NumberValue, 'f', -1, 64)
	case *structpb.Value_BoolValue:
		s = strconv.FormatBool(k.BoolValue)
	default:
		return "", fmt.Errorf("invalid header value %v", v)
	}
	if strings.ContainsAny(s, "\r\n") {
		return "", errors.New("header value contains CR or LF")
	}
	return s, nil
}

// headerValues accepts a string or a list of strings (set_headers, exit).
func headerValues(v *structpb.Value) ([]string, error) {
	if l := v.GetListValue(); l != nil {
		out := make([]string, 0, len(l.Values))
		for _, e := range l.Values {
			s, err := headerValue(e)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	}
	s, err := headerValue(v)
	if err != nil {
		return nil, err
	}
	return []string{s}, nil
}

func headerName(name string) (string, error) {
	if name == "" || strings.ContainsAny(name, " \t\r\n:") {
		return "", fmt.Errorf("invalid header name %q", name)
	}
	return http.CanonicalHeaderKey(name), nil
}

// structHeaders turns a google.protobuf.Struct of headers into a Header.
func structHeaders(s *structpb.Struct) (http.Header, error) {
	h := http.Header{}
	for k, v := range s.GetFields() {
		name, err := headerName(k)
		if err != nil {
			return nil, err
		}
		vals, err := headerValues(v)
		if err != nil {
			return nil, fmt.Errorf("header %s: %w", k, err)
		}
		h[name] = append(h[name], vals...)
	}
	return h, nil
}

// multiStruct encodes a multi-map as Kong does: a single value as a
// string, several as a list.
func multiStruct(m map[string][]string) *structpb.Struct {
	s := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(m))}
	for k, vs := range m {
		if len(vs) == 1 {
			s.Fields[k] = structpb.NewStringValue(vs[0])
			continue
		}
		l := &structpb.ListValue{}
		for _, v := range vs {
			l.Values = append(l.Values, structpb.NewStringValue(v))
		}
		s.Fields[k] = structpb.NewListValue(l)
	}
	return s
}

func maxArg(b []byte) (int, error) {
	a, err := decode[kpp.Int](b)
	if err != nil {
		return 0, err
	}
	n := int(a.V)
	if n == 0 {
		n = defaultMaxHeaders
	}
	if n < 1 || n > maxMaxHeaders {
		return 0, fmt.Errorf("max must be between 1 and %d, got %d", maxMaxHeaders, a.V)
	}
	return n, nil
}

// getHeader is nginx's $http_NAME, which kong.request.get_header reads
// (kong/tools/http.lua get_header, 3.8.1 and 3.9.1): case-insensitive,
// "-" and "_" the same both in the name asked and in the names sent (with
// Kong's underscores_in_headers on, X_Api_Key_Id and X-Api-Key-Id are both
// $http_x_api_key_id), every matching line joined with ", " (cookies with
// "; "), as nginx 1.23+ does (ngx_http_variable_unknown_header).
func (st *reqState) getHeader(name string) string {
	want := headerVarName(name)
	if want == "host" {
		return st.host()
	}
	sep := ", "
	if want == "cookie" {
		sep = "; "
	}
	var out string
	for k, vs := range st.hdr {
		if headerVarName(k) != want {
			continue
		}
		for _, v := range vs {
			if out != "" {
				out += sep
			}
			out += v
		}
	}
	return out
}

// headerVarName is a header name as nginx compares it for $http_NAME.
func headerVarName(name string) string {
	return strings.ToLower(strings.ReplaceAll(name, "-", "_"))
}

func (st *reqState) host() string {
	h := st.r.Host
	if hh, _, err := splitHostPortLoose(h); err == nil {
		h = hh
	}
	return strings.ToLower(h)
}

func splitHostPortLoose(h string) (string, string, error) {
	i := strings.LastIndexByte(h, ':')
	if i < 0 || strings.HasSuffix(h, "]") {
		return strings.Trim(h, "[]"), "", nil
	}
	return strings.Trim(h[:i], "[]"), h[i+1:], nil
}

func (st *reqState) peerTrusted() bool { return st.s.realip.isTrusted(st.peer.Addr()) }

func (st *reqState) readBody() ([]byte, error) {
	if !st.bodyRead {
		st.bodyRead = true
		if st.r.Body != nil && st.r.Body != http.NoBody {
			st.body, st.bodyErr = io.ReadAll(io.LimitReader(st.r.Body, maxRawBody+1))
			if st.bodyErr == nil && len(st.body) > maxRawBody {
				st.bodyErr = fmt.Errorf("request body larger than %d bytes", maxRawBody)
			}
		}
	}
	return st.body, st.bodyErr
}

// logPlugin is a kong.log.* call: Kong's error log at that level, with
// the plugin's namespace, filtered by log_level (kong/pdk/log.lua).
func (st *reqState) logPlugin(level LogLevel, args *structpb.ListValue) {
	if !st.s.klog.enabled(level) {
		return
	}
	var b strings.Builder
	for _, v := range args.GetValues() {
		switch k := v.GetKind().(type) {
		case *structpb.Value_StringValue:
			b.WriteString(k.StringValue)
		case *structpb.Value_NullValue:
			b.WriteString("nil")
		default:
			j, _ := v.MarshalJSON()
			b.Write(j)
		}
	}
	st.s.klog.log(level, "["+st.s.info.name+"] "+b.String(), "route", st.rt.label())
}

func logAt(level LogLevel) pdkHandler {
	return func(st *reqState, b []byte) (proto.Message, error) {
		a, err := decode[structpb.ListValue](b)
		if err != nil {
			return nil, err
		}
		st.logPlugin(level, a)
		return nil, nil
	}
}

// headerKV decodes a KV argument naming a header and its value, both
// checked as Kong checks them.
func headerKV(b []byte) (name, value string, err error) {
	a, err := decode[kpp.KV](b)
	if err != nil {
		return "", "", err
	}
	if name, err = headerName(a.K); err != nil {
		return "", "", err
	}
	value, err = headerValue(a.V)
	return name, value, err
}

// respHeaderKV records a response header change applied to the response
// the client gets (proxied or exit).
func respHeaderKV(op func(h http.Header, name, value string)) pdkHandler {
	return func(st *reqState, b []byte) (proto.Message, error) {
		name, v, err := headerKV(b)
		if err != nil {
			return nil, err
		}
		st.respOps = append(st.respOps, func(h http.Header) { op(h, name, v) })
		return nil, nil
	}
}

func svcHeaderKV(add bool) pdkHandler {
	return func(st *reqState, b []byte) (proto.Message, error) {
		name, v, err := headerKV(b)
		if err != nil {
			return nil, err
		}
		switch {
		case name == "Host":
			st.upHost = v
		case add:
			st.hdr.Add(name, v)
		default:
			st.hdr.Set(name, v)
		}
		return nil, nil
	}
}

var nodeID = stableID("node", "kongemu")

// nginxVar answers the few nginx variables kongemu knows.
func (st *reqState) nginxVar(name string) (string, bool) {
	switch name {
	case "remote_addr":
		return st.fwdAddr.String(), true
	case "remote_port":
		if st.fwdPort == 0 {
			return "", true
		}
		return strconv.Itoa(int(st.fwdPort)), true
	case "realip_remote_addr":
		return st.peer.Addr().Unmap().String(), true
	case "realip_remote_port":
		return strconv.Itoa(int(st.peer.Port())), true
	case "request_uri":
		return st.r.RequestURI, true
	case "uri":
		return st.path, true
	case "args", "query_string":
		return st.r.URL.RawQuery, true
	case "request_method":
		return st.r.Method, true
	case "scheme":
		return "http", true
	case "host":
		return st.host(), true
	case "server_port":
		return strconv.Itoa(st.localPort), true
	case "server_protocol":
		return st.r.Proto, true
	}
	if h, ok := strings.CutPrefix(name, "http_"); ok {
		return st.getHeader(h), true
	}
	return "", false
}
