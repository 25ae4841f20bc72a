package kongemu

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	kpp "github.com/Kong/go-pdk/server/kong_plugin_protocol"
	"github.com/keygate/keygate/kongemu/kongemutest"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestUpstreamPath(t *testing.T) {
	t.Parallel()
	// Kong's path_handling v0 table (docs.konghq.com, "path handling").
	tests := []struct {
		name, base, prefix, req string
		strip                   bool
		want                    string
	}{
		{name: "strip, base no slash, postfix no slash", base: "/s", prefix: "/fv0", req: "/fv0req", strip: true, want: "/s/req"},
		{name: "strip, base no slash, postfix slash", base: "/s", prefix: "/fv0", req: "/fv0/req", strip: true, want: "/s/req"},
		{name: "strip, base no slash, prefix slash", base: "/s", prefix: "/tv0/", req: "/tv0/req", strip: true, want: "/s/req"},
		{name: "strip, base slash, postfix no slash", base: "/s/", prefix: "/fv0", req: "/fv0req", strip: true, want: "/s/req"},
		{name: "strip, base slash, postfix slash", base: "/s/", prefix: "/fv0", req: "/fv0/req", strip: true, want: "/s/req"},
		{name: "strip, exact prefix", base: "/s", prefix: "/fv0", req: "/fv0", strip: true, want: "/s"},
		{name: "strip, exact prefix with slash", base: "/s", prefix: "/fv0/", req: "/fv0/", strip: true, want: "/s/"},
		{name: "strip, base slash, exact", base: "/s/", prefix: "/fv0", req: "/fv0", strip: true, want: "/s"},
		{name: "strip, root base, exact", base: "/", prefix: "/fv0", req: "/fv0", strip: true, want: "/"},
		{name: "strip, root base", base: "/", prefix: "/fv0", req: "/fv0/req", strip: true, want: "/req"},
		{name: "keep, base no slash", base: "/s", prefix: "/fv0", req: "/fv0req", strip: false, want: "/s/fv0req"},
		{name: "keep, base slash", base: "/s/", prefix: "/fv0", req: "/fv0/req", strip: false, want: "/s/fv0/req"},
		{name: "keep, root base", base: "/", prefix: "/fv0", req: "/fv0/req", strip: false, want: "/fv0/req"},
		{name: "keep, request root", base: "/s", prefix: "/", req: "/", strip: false, want: "/s"},
		{name: "strip, dot postfix", base: "/s", prefix: "/a", req: "/a./x", strip: true, want: "/s/x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := upstreamPath(tc.base, tc.strip, tc.prefix, tc.req); got != tc.want {
				t.Errorf("upstreamPath(%q, %v, %q, %q) = %q, want %q", tc.base, tc.strip, tc.prefix, tc.req, got, tc.want)
			}
		})
	}
}

func TestNormalizePath(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, in, want string }{
		{name: "plain", in: "/a/b", want: "/a/b"},
		{name: "trailing slash kept", in: "/a/b/", want: "/a/b/"},
		{name: "dot segments", in: "/a/./b/../c", want: "/a/c"},
		{name: "merged slashes", in: "//a///b", want: "/a/b"},
		{name: "unreserved decoded", in: "/%61%7E", want: "/a~"},
		{name: "reserved kept upper", in: "/a%2fb", want: "/a%2Fb"},
		{name: "empty", in: "", want: "/"},
		{name: "above root", in: "/../x", want: "/x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := normalizePath(tc.in); got != tc.want {
				t.Errorf("normalizePath(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestRealIPResolve(t *testing.T) {
	t.Parallel()
	trusted, err := ParseTrustedIPs("127.0.0.1, 10.0.0.0/8, ::1")
	if err != nil {
		t.Fatal(err)
	}
	peer := netip.MustParseAddrPort("127.0.0.1:4000")
	tests := []struct {
		name      string
		ri        realIP
		peer      netip.AddrPort
		xff       []string
		want      string
		wantPort  uint16
		wantFound bool
	}{
		{name: "no trusted ips", ri: realIP{header: "X-Forwarded-For"}, peer: peer, xff: []string{"1.1.1.1"}, want: "127.0.0.1", wantPort: 4000},
		{name: "last entry", ri: realIP{trusted: trusted, header: "X-Forwarded-For"}, peer: peer, xff: []string{"1.1.1.1, 2.2.2.2"}, want: "2.2.2.2", wantFound: true},
		{name: "recursive skips trusted", ri: realIP{trusted: trusted, header: "X-Forwarded-For", recursive: true}, peer: peer, xff: []string{"1.1.1.1, 2.2.2.2, 10.1.1.1"}, want: "2.2.2.2", wantFound: true},
		{name: "recursive all trusted takes leftmost", ri: realIP{trusted: trusted, header: "X-Forwarded-For", recursive: true}, peer: peer, xff: []string{"10.0.0.1", "10.0.0.2"}, want: "10.0.0.1", wantFound: true},
		{name: "several header lines", ri: realIP{trusted: trusted, header: "X-Forwarded-For", recursive: true}, peer: peer, xff: []string{"3.3.3.3", "10.0.0.2"}, want: "3.3.3.3", wantFound: true},
		{name: "bad entry stops the walk", ri: realIP{trusted: trusted, header: "X-Forwarded-For", recursive: true}, peer: peer, xff: []string{"1.1.1.1, bogus, 10.0.0.9"}, want: "10.0.0.9", wantFound: true},
		{name: "bad last entry keeps the peer", ri: realIP{trusted: trusted, header: "X-Forwarded-For"}, peer: peer, xff: []string{"bogus"}, want: "127.0.0.1", wantPort: 4000},
		{name: "port in entry", ri: realIP{trusted: trusted, header: "X-Forwarded-For"}, peer: peer, xff: []string{"[2001:db8::1]:8080"}, want: "2001:db8::1", wantPort: 8080, wantFound: true},
		{name: "ipv6 peer", ri: realIP{trusted: trusted, header: "X-Forwarded-For"}, peer: netip.MustParseAddrPort("[::1]:5"), xff: []string{"4.4.4.4"}, want: "4.4.4.4", wantFound: true},
		{name: "trailing commas", ri: realIP{trusted: trusted, header: "X-Forwarded-For"}, peer: peer, xff: []string{"5.5.5.5 , "}, want: "5.5.5.5", wantFound: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tc.xff {
				h.Add("X-Forwarded-For", v)
			}
			got, port, found := tc.ri.resolve(tc.peer, h)
			if got.String() != tc.want || port != tc.wantPort || found != tc.wantFound {
				t.Errorf("resolve = %s %d %v, want %s %d %v", got, port, found, tc.want, tc.wantPort, tc.wantFound)
			}
		})
	}
}

func TestParseDump(t *testing.T) {
	t.Parallel()
	const good = `{"Protocol":"ProtoBuf:1","Plugins":[{"Name":"kg","Phases":["access"],"Schema":{"name":"kg","fields":[{"config":{"type":"record","fields":[{"a":{"type":"string"}}]}}]}}]}`
	tests := []struct {
		name, dump, wantErr string
	}{
		{name: "valid", dump: good},
		{name: "wrong protocol", dump: strings.Replace(good, "ProtoBuf:1", "MsgPack:2", 1), wantErr: "protocol"},
		{name: "no name", dump: strings.Replace(good, `"Name":"kg"`, `"Name":""`, 1), wantErr: "no name"},
		{name: "no access phase", dump: strings.Replace(good, `"access"`, `"log"`, 1), wantErr: "access"},
		{name: "two plugins", dump: `{"Protocol":"ProtoBuf:1","Plugins":[{},{}]}`, wantErr: "exactly 1"},
		{name: "not json", dump: `nope`, wantErr: "decode"},
		{name: "no config record", dump: strings.Replace(good, `"config"`, `"other"`, 1), wantErr: "config record"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			info, err := parseDump([]byte(tc.dump))
			if tc.wantErr == "" {
				if err != nil || info.name != "kg" || len(info.schema) != 1 || info.schema[0] != "a" {
					t.Fatalf("parseDump = %+v, %v", info, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestCompile(t *testing.T) {
	t.Parallel()
	const head = "_format_version: \"3.0\"\n"
	tests := []struct {
		name    string
		yml     string
		wantErr string
		check   func(t *testing.T, tb *table)
	}{
		{
			name: "precedence route over service over global",
			yml: head + `services:
- name: a
  url: http://a.example:8080/x
  plugins: [{name: kg, config: {tag: svc}}]
  routes:
  - {name: r1, paths: [/r1], plugins: [{name: kg, config: {tag: route}}]}
  - {name: r2, paths: [/r2]}
- name: b
  url: http://b.example
  routes: [{name: r3, paths: [/r3]}]
plugins:
- {name: kg, config: {tag: global}}
- {name: kg, route: r3, enabled: false, config: {tag: off}}
`,
			check: func(t *testing.T, tb *table) {
				want := map[string]any{"r1": "route", "r2": "svc", "r3": "global"}
				for _, r := range tb.routes {
					if got := r.inst.config["tag"]; got != want[r.name] {
						t.Errorf("route %s: tag %v, want %v", r.name, got, want[r.name])
					}
					if _, ok := r.inst.config["flags"]; !ok {
						t.Errorf("route %s: unset schema field not sent as null", r.name)
					}
				}
				if len(tb.instances) != 3 {
					t.Errorf("%d instances, want 3", len(tb.instances))
				}
				if tb.routes[0].svc.hostHeader() != "a.example:8080" || tb.routes[2].svc.hostHeader() != "b.example" {
					t.Errorf("host headers %q %q", tb.routes[0].svc.hostHeader(), tb.routes[2].svc.hostHeader())
				}
			},
		},
		{
			name: "top-level route with service reference",
			yml: head + `services: [{name: a, url: "unix:/tmp/x.sock"}]
routes: [{name: r, service: {name: a}, paths: [/], strip_path: false}]
`,
			check: func(t *testing.T, tb *table) {
				r := tb.routes[0]
				if r.svc.socket != "/tmp/x.sock" || r.stripPath || r.inst != nil {
					t.Errorf("route %+v", r)
				}
			},
		},
		{name: "unknown plugin", yml: head + "services: [{name: a, url: http://a, routes: [{paths: [/]}]}]\nplugins: [{name: cors}]\n", wantErr: `plugin "cors" is not supported`},
		{name: "regex path", yml: head + "services: [{name: a, url: http://a, routes: [{paths: [\"~/x$\"]}]}]\n", wantErr: "regex path"},
		{name: "no paths", yml: head + "services: [{name: a, url: http://a, routes: [{methods: [GET]}]}]\n", wantErr: "at least one path"},
		{name: "unknown service", yml: head + "routes: [{name: r, service: nope, paths: [/]}]\n", wantErr: `unknown service "nope"`},
		{name: "duplicate route name", yml: head + "services: [{name: a, url: http://a, routes: [{name: r, paths: [/a]}, {name: r, paths: [/b]}]}]\n", wantErr: "duplicate route"},
		{name: "two plugins on one route", yml: head + "services: [{name: a, url: http://a, routes: [{name: r, paths: [/], plugins: [{name: kg}]}]}]\nplugins: [{name: kg, route: r}]\n", wantErr: "configured twice"},
		{name: "unknown config field", yml: head + "services: [{name: a, url: http://a, routes: [{paths: [/]}]}]\nplugins: [{name: kg, config: {nope: 1}}]\n", wantErr: "config.nope"},
		{name: "bad service url", yml: head + "services: [{name: a, url: \"ftp://a\", routes: [{paths: [/]}]}]\n", wantErr: "unsupported protocol"},
		{name: "lower-case method", yml: head + "services: [{name: a, url: http://a, routes: [{paths: [/], methods: [get]}]}]\n", wantErr: "upper case"},
		{name: "path handling v1", yml: head + "services: [{name: a, url: http://a, routes: [{paths: [/], path_handling: v1}]}]\n", wantErr: "v0 only"},
		{name: "no routes", yml: head + "services: [{name: a, url: http://a}]\n", wantErr: "no routes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := ParseDeclarative([]byte(tc.yml))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			tb, err := compile(d, "kg", pluginSchema{"tag", "flags"})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, tb)
		})
	}
}

func TestParseDeclarativeRejects(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, yml, wantErr string }{
		{name: "wrong version", yml: "_format_version: \"1.1\"\n", wantErr: "_format_version"},
		{name: "unknown top-level key", yml: "_format_version: \"3.0\"\nconsumers: []\n", wantErr: "consumers"},
		{name: "hosts on a route", yml: "_format_version: \"3.0\"\nroutes: [{hosts: [a]}]\n", wantErr: "hosts"},
		{name: "empty", yml: "", wantErr: "empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseDeclarative([]byte(tc.yml))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestFrameRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		data []byte
	}{
		{name: "empty", data: nil},
		{name: "small", data: []byte("kong.request.get_header")},
		{name: "large", data: bytes.Repeat([]byte{7}, 1<<20)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := writeFrame(&buf, tc.data); err != nil {
				t.Fatal(err)
			}
			got, err := readFrame(&buf)
			if err != nil || !bytes.Equal(got, tc.data) {
				t.Fatalf("readFrame = %d bytes, %v", len(got), err)
			}
		})
	}
	t.Run("too large", func(t *testing.T) {
		var hdr [4]byte
		binary.LittleEndian.PutUint32(hdr[:], MaxFrameSize+1)
		if _, err := readFrame(bytes.NewReader(hdr[:])); !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("err %v, want ErrFrameTooLarge", err)
		}
	})
	t.Run("truncated", func(t *testing.T) {
		if _, err := readFrame(bytes.NewReader([]byte{5, 0, 0, 0, 1})); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("err %v", err)
		}
	})
}

// TestNoPluginInstanceRetry drives the real plugin with an instance id it
// does not know: go-pdk drops the connection ("no plugin instance") and
// kongemu, like Kong, starts the instance again and retries once.
func TestNoPluginInstanceRetry(t *testing.T) {
	logs := &kongemutest.LogBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	info, err := queryPlugin(context.Background(), pluginBin+" -dump", nil)
	if err != nil {
		t.Fatal(err)
	}
	prefix := shortTempDir(t)
	proc := newProcess(info.name, pluginBin+" -kong-prefix "+prefix, prefix+"/"+info.name+".socket", nil, logger, &kongLog{logger: logger})
	ctx, cancel := context.WithCancel(context.Background())
	go proc.supervise(ctx)
	t.Cleanup(func() { cancel(); <-proc.done })
	if err := proc.waitSocket(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	cl := newClient(proc, 4, logger)
	t.Cleanup(cl.closeIdle)
	in := &instance{name: info.name, pluginID: "p1", seq: 7, config: map[string]any{"tag": "x"}, where: "test"}
	if _, err := cl.ensure(ctx, in); err != nil {
		t.Fatal(err)
	}
	cl.running[in.pluginID].id = 4242 // the plugin has no such instance

	s := &server{logger: logger, info: info, realip: &realIP{}, klog: &kongLog{logger: logger}}
	rt := &route{name: "r", svc: &service{}}
	r := httptest.NewRequest("GET", "/", nil)
	st := &reqState{s: s, r: r, rt: rt, path: "/", peer: netip.MustParseAddrPort("127.0.0.1:1")}
	st.fwdAddr = st.peer.Addr()
	ectx, ecancel := context.WithTimeout(ctx, 5*time.Second)
	defer ecancel()
	if err := cl.handleEvent(ectx, in, st); err != nil {
		t.Fatalf("handleEvent: %v\n%s", err, logs)
	}
	if id := cl.running[in.pluginID].id; id != 7 {
		t.Errorf("instance id %d after restart, want __seq__ 7", id)
	}
	if strings.Join(st.calls, ",") != "kong.request.get_header" {
		t.Errorf("calls %v", st.calls)
	}
	if !strings.Contains(logs.String(), "retrying") {
		t.Errorf("retry not logged:\n%s", logs)
	}
}

func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := tempPrefix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// kong.ctx.shared and ngx.ctx are two separate key-value stores of a
// request: a key set in one is null in the other, and a key never set is
// null in both.
func TestContextStores(t *testing.T) {
	st := &reqState{r: httptest.NewRequest("GET", "/", nil)}
	st.resetEvent()
	call := func(method string, arg proto.Message) *structpb.Value {
		t.Helper()
		b, err := proto.Marshal(arg)
		if err != nil {
			t.Fatal(err)
		}
		out, err := st.dispatch(method, b)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		if out == nil {
			return nil
		}
		var v structpb.Value
		if err := proto.Unmarshal(out, &v); err != nil {
			t.Fatalf("%s answer: %v", method, err)
		}
		return &v
	}
	call("kong.ctx.shared.set", &kpp.KV{K: "a", V: structpb.NewStringValue("shared")})
	call("kong.nginx.set_ctx", &kpp.KV{K: "b", V: structpb.NewStringValue("nginx")})
	for _, c := range []struct{ get, key, want string }{
		{"kong.ctx.shared.get", "a", "shared"},
		{"kong.ctx.shared.get", "b", ""},
		{"kong.nginx.get_ctx", "b", "nginx"},
		{"kong.nginx.get_ctx", "a", ""},
		{"kong.nginx.get_ctx", "never", ""},
	} {
		v := call(c.get, &kpp.String{V: c.key})
		if c.want == "" {
			if _, null := v.GetKind().(*structpb.Value_NullValue); !null {
				t.Errorf("%s %q = %v, want null", c.get, c.key, v)
			}
		} else if v.GetStringValue() != c.want {
			t.Errorf("%s %q = %v, want %q", c.get, c.key, v, c.want)
		}
	}
}

// The header setters of kong.service.request and kong.response check the
// name and value as Kong does, and change nothing on a bad one.
func TestHeaderSetters(t *testing.T) {
	st := &reqState{r: httptest.NewRequest("GET", "/", nil)}
	st.resetEvent()
	set := func(method, name string, v *structpb.Value) error {
		t.Helper()
		b, err := proto.Marshal(&kpp.KV{K: name, V: v})
		if err != nil {
			t.Fatal(err)
		}
		_, err = st.dispatch(method, b)
		return err
	}
	for _, m := range []string{"kong.service.request.set_header", "kong.service.request.add_header", "kong.response.set_header", "kong.response.add_header"} {
		for _, bad := range []struct {
			name string
			v    *structpb.Value
		}{
			{"", structpb.NewStringValue("x")},
			{"bad name", structpb.NewStringValue("x")},
			{"x-colon:", structpb.NewStringValue("x")},
			{"x-ok", structpb.NewListValue(&structpb.ListValue{})},
		} {
			if err := set(m, bad.name, bad.v); err == nil {
				t.Errorf("%s %q %v: accepted", m, bad.name, bad.v)
			}
		}
	}
	if len(st.respOps) != 0 || len(st.hdr) != 0 {
		t.Fatalf("bad headers changed the request or response: %v %d", st.hdr, len(st.respOps))
	}
	if err := set("kong.service.request.set_header", "x-n", structpb.NewNumberValue(7)); err != nil {
		t.Fatal(err)
	}
	if err := set("kong.service.request.add_header", "X-N", structpb.NewBoolValue(true)); err != nil {
		t.Fatal(err)
	}
	if err := set("kong.service.request.set_header", "host", structpb.NewStringValue("up.example")); err != nil {
		t.Fatal(err)
	}
	if got := st.hdr.Values("X-N"); len(got) != 2 || got[0] != "7" || got[1] != "true" || st.upHost != "up.example" || st.hdr.Get("Host") != "" {
		t.Fatalf("upstream headers %v, host %q", st.hdr, st.upHost)
	}
	if err := set("kong.response.add_header", "x-r", structpb.NewStringValue("1")); err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	for _, op := range st.respOps {
		op(h)
	}
	if h.Get("X-R") != "1" {
		t.Fatalf("response headers %v", h)
	}
}
