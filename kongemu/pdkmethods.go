package kongemu

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	kpp "github.com/Kong/go-pdk/server/kong_plugin_protocol"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// pdkMethods are the PDK methods kongemu serves, named as on the wire.
var pdkMethods map[string]pdkHandler

func init() {
	pdkMethods = map[string]pdkHandler{}
	for _, group := range []map[string]pdkHandler{
		requestMethods(), clientMethods(), responseMethods(), serviceRequestMethods(), contextMethods(), logMethods(), routerMethods(),
	} {
		for name, h := range group {
			pdkMethods[name] = h
		}
	}
}

// requestMethods are the kong.request methods.
func requestMethods() map[string]pdkHandler {
	return map[string]pdkHandler{
		"kong.request.get_scheme": noArg(func(st *reqState) (proto.Message, error) { return str("http"), nil }),
		"kong.request.get_host":   noArg(func(st *reqState) (proto.Message, error) { return str(st.host()), nil }),
		"kong.request.get_port":   noArg(func(st *reqState) (proto.Message, error) { return num(st.localPort), nil }),
		"kong.request.get_forwarded_scheme": noArg(func(st *reqState) (proto.Message, error) {
			if v := st.r.Header.Get("X-Forwarded-Proto"); v != "" && st.peerTrusted() {
				return str(strings.ToLower(v)), nil
			}
			return str("http"), nil
		}),
		"kong.request.get_forwarded_host": noArg(func(st *reqState) (proto.Message, error) {
			if v := st.r.Header.Get("X-Forwarded-Host"); v != "" && st.peerTrusted() {
				h, _, _ := splitHostPortLoose(strings.TrimSpace(strings.Split(v, ",")[0]))
				return str(strings.ToLower(h)), nil
			}
			return str(st.host()), nil
		}),
		"kong.request.get_forwarded_port": noArg(func(st *reqState) (proto.Message, error) {
			if v := st.r.Header.Get("X-Forwarded-Port"); v != "" && st.peerTrusted() {
				if p, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && p > 0 && p < 65536 {
					return num(p), nil
				}
			}
			return num(st.localPort), nil
		}),
		"kong.request.get_http_version": noArg(func(st *reqState) (proto.Message, error) {
			return &kpp.Number{V: float64(st.r.ProtoMajor) + float64(st.r.ProtoMinor)/10}, nil
		}),
		"kong.request.get_method": noArg(func(st *reqState) (proto.Message, error) { return str(st.r.Method), nil }),
		"kong.request.get_path": noArg(func(st *reqState) (proto.Message, error) {
			return str(kongNormalize(rawPath(st.r.RequestURI), true)), nil
		}),
		"kong.request.get_raw_path":        noArg(func(st *reqState) (proto.Message, error) { return str(rawPath(st.r.RequestURI)), nil }),
		"kong.request.get_path_with_query": noArg(func(st *reqState) (proto.Message, error) { return str(st.r.RequestURI), nil }),
		"kong.request.get_raw_query":       noArg(func(st *reqState) (proto.Message, error) { return str(st.r.URL.RawQuery), nil }),
		"kong.request.get_query_arg": strArg(func(st *reqState, k string) (proto.Message, error) {
			q, _ := url.ParseQuery(st.r.URL.RawQuery)
			return str(q.Get(k)), nil
		}),
		"kong.request.get_query": getQuery,
		"kong.request.get_header": strArg(func(st *reqState, k string) (proto.Message, error) {
			return str(st.getHeader(k)), nil
		}),
		"kong.request.get_headers": getHeaders,
		"kong.request.get_raw_body": noArg(func(st *reqState) (proto.Message, error) {
			b, err := st.readBody()
			if err != nil {
				return &kpp.RawBodyResult{Kind: &kpp.RawBodyResult_Error{Error: err.Error()}}, nil
			}
			return &kpp.RawBodyResult{Kind: &kpp.RawBodyResult_Content{Content: b}}, nil
		}),
	}
}

// clientMethods are the kong.client and kong.ip methods.
func clientMethods() map[string]pdkHandler {
	return map[string]pdkHandler{
		"kong.client.get_ip": noArg(func(st *reqState) (proto.Message, error) {
			return str(st.peer.Addr().Unmap().String()), nil
		}),
		"kong.client.get_forwarded_ip": noArg(func(st *reqState) (proto.Message, error) {
			return str(st.fwdAddr.String()), nil
		}),
		"kong.client.get_port": noArg(func(st *reqState) (proto.Message, error) { return num(int(st.peer.Port())), nil }),
		"kong.client.get_forwarded_port": noArg(func(st *reqState) (proto.Message, error) {
			return num(int(st.fwdPort)), nil
		}),
		"kong.client.get_protocol": noArg(func(st *reqState) (proto.Message, error) { return str("http"), nil }),
		"kong.client.authenticate": authenticate,
		"kong.client.get_credential": noArg(func(st *reqState) (proto.Message, error) {
			if st.cred == nil {
				return nil, nil
			}
			return st.cred, nil
		}),
		"kong.client.get_consumer": noArg(func(st *reqState) (proto.Message, error) {
			if st.consumer == nil {
				return nil, nil
			}
			return st.consumer, nil
		}),
		"kong.ip.is_trusted": strArg(func(st *reqState, s string) (proto.Message, error) {
			a, err := netip.ParseAddr(s)
			return &kpp.Bool{V: err == nil && st.s.realip.isTrusted(a)}, nil
		}),
	}
}

// responseMethods are the kong.response methods.
func responseMethods() map[string]pdkHandler {
	return map[string]pdkHandler{
		"kong.response.exit":       responseExit,
		"kong.response.set_header": respHeaderKV(func(h http.Header, k, v string) { h.Set(k, v) }),
		"kong.response.add_header": respHeaderKV(func(h http.Header, k, v string) { h.Add(k, v) }),
		"kong.response.clear_header": strArg(func(st *reqState, k string) (proto.Message, error) {
			name, err := headerName(k)
			if err != nil {
				return nil, err
			}
			st.respOps = append(st.respOps, func(h http.Header) { h.Del(name) })
			return nil, nil
		}),
		"kong.response.set_headers": responseSetHeaders,
	}
}

// serviceRequestMethods are the kong.service.request methods.
func serviceRequestMethods() map[string]pdkHandler {
	return map[string]pdkHandler{
		"kong.service.request.set_header": svcHeaderKV(false),
		"kong.service.request.add_header": svcHeaderKV(true),
		"kong.service.request.clear_header": strArg(func(st *reqState, k string) (proto.Message, error) {
			name, err := headerName(k)
			if err != nil {
				return nil, err
			}
			st.hdr.Del(name)
			return nil, nil
		}),
		"kong.service.request.set_headers": serviceSetHeaders,
		"kong.service.request.set_path": strArg(func(st *reqState, p string) (proto.Message, error) {
			if !strings.HasPrefix(p, "/") {
				return nil, fmt.Errorf("path %q must start with /", p)
			}
			st.upPath = p
			return nil, nil
		}),
		"kong.service.request.set_raw_query": strArg(func(st *reqState, q string) (proto.Message, error) {
			st.upQuery = &q
			return nil, nil
		}),
		"kong.service.request.set_method": strArg(func(st *reqState, m string) (proto.Message, error) {
			if m == "" || strings.ToUpper(m) != m {
				return nil, fmt.Errorf("invalid method %q", m)
			}
			st.upMethod = m
			return nil, nil
		}),
		"kong.service.request.set_query":    serviceSetQuery,
		"kong.service.request.set_raw_body": serviceSetRawBody,
	}
}

// contextMethods are the kong.ctx, kong.nginx and kong.node methods.
func contextMethods() map[string]pdkHandler {
	return map[string]pdkHandler{
		"kong.ctx.shared.set": kvSet(func(st *reqState) map[string]*structpb.Value { return st.shared }),
		"kong.ctx.shared.get": kvGet(func(st *reqState) map[string]*structpb.Value { return st.shared }),
		"kong.nginx.set_ctx":  kvSet(func(st *reqState) map[string]*structpb.Value { return st.ngxCtx }),
		"kong.nginx.get_ctx":  kvGet(func(st *reqState) map[string]*structpb.Value { return st.ngxCtx }),
		"kong.nginx.get_var": strArg(func(st *reqState, name string) (proto.Message, error) {
			v, ok := st.nginxVar(name)
			if !ok {
				return nil, fmt.Errorf("nginx variable %q: %w", name, errUnsupported)
			}
			return str(v), nil
		}),
		"kong.nginx.req_start_time": noArg(func(st *reqState) (proto.Message, error) {
			return &kpp.Number{V: float64(st.start.UnixMicro()) / 1e6}, nil
		}),
		"kong.nginx.get_subsystem": noArg(func(st *reqState) (proto.Message, error) { return str("http"), nil }),
		"kong.node.get_id":         noArg(func(st *reqState) (proto.Message, error) { return str(nodeID), nil }),
	}
}

// logMethods are the kong.log methods.
func logMethods() map[string]pdkHandler {
	return map[string]pdkHandler{
		"kong.log.alert":  logAt(LevelAlert),
		"kong.log.crit":   logAt(LevelCrit),
		"kong.log.err":    logAt(LevelError),
		"kong.log.warn":   logAt(LevelWarn),
		"kong.log.notice": logAt(LevelNotice),
		"kong.log.info":   logAt(LevelInfo),
		"kong.log.debug":  logAt(LevelDebug),
	}
}

// routerMethods are the kong.router methods.
func routerMethods() map[string]pdkHandler {
	return map[string]pdkHandler{
		"kong.router.get_route":   noArg(func(st *reqState) (proto.Message, error) { return st.rt.pb, nil }),
		"kong.router.get_service": noArg(func(st *reqState) (proto.Message, error) { return st.rt.svc.pb, nil }),
	}
}

// getQuery serves kong.request.get_query.
func getQuery(st *reqState, b []byte) (proto.Message, error) {
	n, err := maxArg(b)
	if err != nil {
		return nil, err
	}
	q, _ := url.ParseQuery(st.r.URL.RawQuery)
	out := map[string][]string{}
	for k, vs := range q {
		for _, v := range vs {
			if n == 0 {
				break
			}
			out[k] = append(out[k], v)
			n--
		}
	}
	return multiStruct(out), nil
}

// getHeaders serves kong.request.get_headers.
func getHeaders(st *reqState, b []byte) (proto.Message, error) {
	n, err := maxArg(b)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{"host": {st.r.Host}}
	n--
	for k, vs := range st.hdr {
		for _, v := range vs {
			if n <= 0 {
				break
			}
			lk := strings.ToLower(k)
			out[lk] = append(out[lk], v)
			n--
		}
	}
	return multiStruct(out), nil
}

// authenticate serves kong.client.authenticate.
func authenticate(st *reqState, b []byte) (proto.Message, error) {
	a, err := decode[kpp.AuthenticateArgs](b)
	if err != nil {
		return nil, err
	}
	if a.Consumer == nil && a.Credential == nil {
		return nil, errors.New("either credential or consumer must be provided")
	}
	st.consumer, st.cred = a.Consumer, a.Credential
	return nil, nil
}

// responseExit serves kong.response.exit.
func responseExit(st *reqState, b []byte) (proto.Message, error) {
	a, err := decode[kpp.ExitArgs](b)
	if err != nil {
		return nil, err
	}
	if a.Status < 100 || a.Status > 599 {
		return nil, fmt.Errorf("status %d must be between 100 and 599", a.Status)
	}
	h, err := structHeaders(a.Headers)
	if err != nil {
		return nil, err
	}
	st.exit = &exitInfo{status: int(a.Status), body: a.Body, header: h}
	return nil, errExited
}

// responseSetHeaders serves kong.response.set_headers.
func responseSetHeaders(st *reqState, b []byte) (proto.Message, error) {
	a, err := decode[structpb.Struct](b)
	if err != nil {
		return nil, err
	}
	hs, err := structHeaders(a)
	if err != nil {
		return nil, err
	}
	st.respOps = append(st.respOps, func(h http.Header) {
		for k, vs := range hs {
			h[k] = vs
		}
	})
	return nil, nil
}

// serviceSetHeaders serves kong.service.request.set_headers.
func serviceSetHeaders(st *reqState, b []byte) (proto.Message, error) {
	a, err := decode[structpb.Struct](b)
	if err != nil {
		return nil, err
	}
	hs, err := structHeaders(a)
	if err != nil {
		return nil, err
	}
	for k, vs := range hs {
		if k == "Host" {
			st.upHost = vs[0]
			continue
		}
		st.hdr[k] = vs
	}
	return nil, nil
}

// serviceSetQuery serves kong.service.request.set_query.
func serviceSetQuery(st *reqState, b []byte) (proto.Message, error) {
	a, err := decode[structpb.Struct](b)
	if err != nil {
		return nil, err
	}
	q := url.Values{}
	for k, v := range a.GetFields() {
		vals, err := headerValues(v)
		if err != nil {
			return nil, fmt.Errorf("query arg %s: %w", k, err)
		}
		q[k] = vals
	}
	enc := q.Encode()
	st.upQuery = &enc
	return nil, nil
}

// serviceSetRawBody serves kong.service.request.set_raw_body.
func serviceSetRawBody(st *reqState, b []byte) (proto.Message, error) {
	a, err := decode[kpp.ByteString](b)
	if err != nil {
		return nil, err
	}
	st.upBody, st.upBodySet = a.V, true
	return nil, nil
}
