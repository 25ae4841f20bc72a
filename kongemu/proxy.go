package kongemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Response headers kongemu adds with Config.ExposePDKCalls.
const (
	HeaderPDKCalls   = "X-Kongemu-Pdk-Calls"
	HeaderPDKMethods = "X-Kongemu-Pdk-Methods"
)

// server is the HTTP side: routing, the access event, proxying.
type server struct {
	cfg    Config
	logger *slog.Logger
	info   *pluginInfo
	table  atomic.Pointer[table] // swapped by a reload
	seq    atomic.Int32          // Kong's node-wide __seq__ counter
	client *client
	realip *realIP
	klog   *kongLog
}

type stateKey struct{}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if status, msg := headerLimit(r); status != 0 {
		if status == 494 { // kong/error_handlers.lua: 494 goes out as 400
			status = http.StatusBadRequest
		}
		w.Header().Set("Connection", "close")
		writeKongError(w, status, msg, "")
		return
	}
	p := normalizePath(r.URL.EscapedPath())
	tbl := s.table.Load()
	rt, prefix := tbl.match(r.Method, p)
	if rt == nil {
		writeKongError(w, http.StatusNotFound, "no Route matched with those values", "")
		return
	}
	st := &reqState{s: s, r: r, rt: rt, path: p, start: time.Now()}
	st.peer = peerAddr(r)
	st.fwdAddr, st.fwdPort, _ = s.realip.resolve(st.peer, r.Header)
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ap, err := netip.ParseAddrPort(la.String()); err == nil {
			st.localPort = int(ap.Port())
		}
	}
	st.resetEvent()

	if rt.inst != nil {
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.EventTimeout)
		err := s.client.handleEvent(ctx, rt.inst, st)
		cancel()
		if s.cfg.ExposePDKCalls {
			w.Header().Set(HeaderPDKCalls, strconv.Itoa(len(st.calls)))
			w.Header().Set(HeaderPDKMethods, strings.Join(st.calls, ","))
		}
		if err != nil {
			var pe *PDKError
			if errors.As(err, &pe) {
				s.logger.Error("plugin PDK call failed", "method", pe.Method, "route", rt.label(), "err", pe.Err)
			} else {
				s.logger.Error("plugin event failed", "route", rt.label(), "entry", rt.inst.where, "err", err)
			}
			writeKongError(w, http.StatusInternalServerError, "An unexpected error occurred", err.Error())
			return
		}
		if st.exit != nil {
			s.writeExit(w, st)
			return
		}
	}
	if st.bodyRead {
		if st.bodyErr != nil {
			writeKongError(w, http.StatusRequestEntityTooLarge, "Request size limit exceeded", st.bodyErr.Error())
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(st.body))
	}
	tbl.proxies[rt.svc].ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), stateKey{}, &proxyState{st: st, prefix: prefix})))
}

type proxyState struct {
	st     *reqState
	prefix string
}

func (s *server) writeExit(w http.ResponseWriter, st *reqState) {
	h := w.Header()
	for _, op := range st.respOps {
		op(h)
	}
	for k, vs := range st.exit.header {
		h[k] = vs
	}
	if _, ok := h["Content-Type"]; !ok {
		h["Content-Type"] = nil // no sniffing: Kong sends the body as given
	}
	h.Set("Content-Length", strconv.Itoa(len(st.exit.body)))
	w.WriteHeader(st.exit.status)
	w.Write(st.exit.body)
}

// rewrite builds the upstream request as Kong does after the access phase.
func (s *server) rewrite(pr *httputil.ProxyRequest) {
	ps := pr.In.Context().Value(stateKey{}).(*proxyState)
	st, rt, in, out := ps.st, ps.st.rt, pr.In, pr.Out
	svc := rt.svc

	out.URL.Scheme = svc.scheme
	out.URL.Host = joinHostPort(svc.host, svc.port)
	if svc.scheme == "unix" {
		out.URL.Scheme, out.URL.Host = "http", "localhost"
	}
	escaped := upstreamPath(svc.basePath, rt.stripPath, ps.prefix, st.path)
	if st.upPath != "" {
		escaped = (&url.URL{Path: st.upPath}).EscapedPath()
	}
	out.URL.Path, _ = url.PathUnescape(escaped)
	out.URL.RawPath = escaped
	out.URL.RawQuery, out.URL.ForceQuery = in.URL.RawQuery, in.URL.ForceQuery
	if st.upQuery != nil {
		out.URL.RawQuery, out.URL.ForceQuery = *st.upQuery, false
	}
	if st.upMethod != "" {
		out.Method = st.upMethod
	}
	if st.upBodySet {
		out.Body = io.NopCloser(bytes.NewReader(st.upBody))
		out.ContentLength = int64(len(st.upBody))
		out.TransferEncoding = nil
	}

	// Headers: the plugin's view, without hop-by-hop headers, keeping what
	// httputil decided for TE and Upgrade.
	h := st.hdr.Clone()
	for _, f := range h.Values("Connection") {
		for _, tok := range strings.Split(f, ",") {
			if tok = strings.TrimSpace(tok); tok != "" {
				h.Del(tok)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
	for _, k := range []string{"Te", "Connection", "Upgrade"} {
		if v, ok := out.Header[k]; ok {
			h[k] = v
		}
	}
	if st.upBodySet {
		h.Set("Content-Length", strconv.Itoa(len(st.upBody)))
	}
	out.Header = h

	switch {
	case st.upHost != "":
		out.Host = st.upHost
	case rt.preserveHost:
		out.Host = in.Host
	default:
		out.Host = svc.hostHeader()
	}

	// X-Forwarded-* and X-Real-IP, computed from the client's request.
	peer := st.peer.Addr().Unmap().String()
	if xff := strings.Join(in.Header.Values("X-Forwarded-For"), ", "); xff != "" {
		h.Set("X-Forwarded-For", xff+", "+peer)
	} else {
		h.Set("X-Forwarded-For", st.fwdAddr.String())
	}
	proto, host, port := "http", st.host(), strconv.Itoa(st.localPort)
	fpath, fprefix := st.path, ""
	if rt.stripPath && ps.prefix != "/" {
		fprefix = ps.prefix
	}
	if st.peerTrusted() {
		pick := func(name string, v *string) {
			if got := in.Header.Get(name); got != "" {
				*v = got
			}
		}
		pick("X-Forwarded-Proto", &proto)
		pick("X-Forwarded-Host", &host)
		pick("X-Forwarded-Port", &port)
		pick("X-Forwarded-Path", &fpath)
		pick("X-Forwarded-Prefix", &fprefix)
	}
	h.Set("X-Forwarded-Proto", proto)
	h.Set("X-Forwarded-Host", host)
	h.Set("X-Forwarded-Port", port)
	h.Set("X-Forwarded-Path", fpath)
	h.Del("X-Forwarded-Prefix")
	if fprefix != "" {
		h.Set("X-Forwarded-Prefix", fprefix)
	}
	h.Set("X-Real-Ip", st.fwdAddr.String())
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = nil // do not let Go add its own
	}
}

var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func (s *server) modifyResponse(resp *http.Response) error {
	ps := resp.Request.Context().Value(stateKey{}).(*proxyState)
	for _, op := range ps.st.respOps {
		op(resp.Header)
	}
	return nil
}

func (s *server) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		s.logger.Error("upstream timed out", "path", r.URL.Path, "err", err)
		writeKongError(w, http.StatusGatewayTimeout, "The upstream server is timed out", "")
		return
	}
	if errors.Is(err, context.Canceled) {
		return // the client went away
	}
	s.logger.Error("upstream request failed", "path", r.URL.Path, "err", err)
	writeKongError(w, http.StatusBadGateway, "An invalid response was received from the upstream server", "")
}

// install makes t the configuration requests see: every plugin entry gets
// the next __seq__ (so its instance is started anew at its next event,
// and the one it replaces closed), every service a proxy. It returns the
// configuration t replaces, if any.
func (s *server) install(t *table) *table {
	for _, in := range t.instances {
		in.seq = s.seq.Add(1)
	}
	t.proxies = map[*service]*httputil.ReverseProxy{}
	for _, rt := range t.routes {
		if t.proxies[rt.svc] == nil {
			t.proxies[rt.svc] = s.newProxy(rt.svc)
		}
	}
	return s.table.Swap(t)
}

// newProxy builds the reverse proxy of one service.
func (s *server) newProxy(svc *service) *httputil.ReverseProxy {
	dialer := &net.Dialer{Timeout: svc.connectTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       60 * time.Second,
		ResponseHeaderTimeout: svc.readTimeout,
		ExpectContinueTimeout: time.Second,
		TLSHandshakeTimeout:   svc.connectTimeout,
	}
	if svc.scheme == "unix" {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", svc.socket)
		}
	}
	return &httputil.ReverseProxy{
		Rewrite:        s.rewrite,
		Transport:      tr,
		ModifyResponse: s.modifyResponse,
		ErrorHandler:   s.proxyError,
		ErrorLog:       slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
}

func peerAddr(r *http.Request) netip.AddrPort {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		// unix listeners and tests: no IP peer
		return netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// writeKongError writes Kong's JSON error body. detail, when set, is added
// as "kongemu_error" so that a missing feature is visible to the caller.
func writeKongError(w http.ResponseWriter, status int, msg, detail string) {
	body := map[string]string{"message": msg}
	if detail != "" {
		body["kongemu_error"] = detail
	}
	b, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}
