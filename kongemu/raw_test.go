package kongemu

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	kpp "github.com/Kong/go-pdk/server/kong_plugin_protocol"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Known answers of Kong's normalize (kong/tools/uri.lua), worked by hand
// through its loop; the first is the example in kong/pdk/request.lua.
func TestKongNormalize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"/t/Abc%20123%C3%B8%2f/parent/..//test/./", "/t/Abc 123\xc3\xb8%2F/test/"},
		{"", ""},
		{"/", "/"},
		{"/a/%2e%2E/b", "/b"},
		{"//a//b", "/a/b"},
		{"/a/b/..", "/a/"},
		{"/a/b/.", "/a/b/"},
		{"/../../a", "/a"},
		{"/%41%7e%5F", "/A~_"},
		{"/%25%3f%2F%3B%40", "/%25%3F%2F%3B%40"},
		{"/%ff", "/\xff"},
		{"/%zz%4", "/%zz%4"},
		{"/%%34%31", "/%41"}, // one pass: not idempotent, as in Kong
		{"/a.b/c", "/a.b/c"},
		{"/...", "/..."},
	} {
		if got := kongNormalize(tc.in, true); got != tc.want {
			t.Errorf("normalize(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := rawPath("/a?b?c"); got != "/a" {
		t.Errorf("raw path %q", got)
	}
	if got := rawPath("?x"); got != "?x" {
		t.Errorf("raw path of %q: %q (the search starts at the second byte)", "?x", got)
	}
}

// Property: for a path starting with "/", the result has no "//" and no
// "." or ".." segment, and an input without "%", "." or "//" is returned
// as it is.
func FuzzKongNormalize(f *testing.F) {
	for _, s := range []string{"/t/Abc%20123%C3%B8%2f/parent/..//test/./", "/%2e%2e/", "//", "/a/./b/../c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := kongNormalize(in, true)
		if !strings.ContainsAny(in, "%.") && !strings.Contains(in, "//") && out != in {
			t.Fatalf("%q changed to %q", in, out)
		}
		if !strings.HasPrefix(in, "/") {
			return
		}
		if strings.Contains(out, "//") {
			t.Fatalf("%q -> %q keeps //", in, out)
		}
		for _, seg := range strings.Split(out, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("%q -> %q keeps a dot segment", in, out)
			}
		}
	})
}

// Replies carrying request bytes are encoded byte for byte, as
// lua-protobuf does; valid ones exactly as proto.Marshal does.
func TestMarshalReplyRawBytes(t *testing.T) {
	t.Parallel()
	bad := "a\xffb"
	b, err := marshalReply(&kpp.String{V: bad})
	if err != nil {
		t.Fatal(err)
	}
	var s kpp.String
	if err := (proto.UnmarshalOptions{}).Unmarshal(b, &s); err == nil {
		t.Fatalf("go-pdk would accept invalid UTF-8 (%q)", s.V)
	}
	if !strings.Contains(string(b), bad) {
		t.Fatalf("bytes not carried: %q", b)
	}
	st := multiStruct(map[string][]string{"x": {bad}, "y": {"1", "2"}})
	b, err = marshalReply(st)
	if err != nil {
		t.Fatal(err)
	}
	// The same encoder on valid input decodes to what was encoded.
	valid := multiStruct(map[string][]string{"x": {"ok"}, "y": {"1", "2"}, "n": {""}})
	var back structpb.Struct
	if err := proto.Unmarshal(appendStruct(nil, valid), &back); err != nil || !proto.Equal(&back, valid) {
		t.Fatalf("round trip %v: %v", &back, err)
	}
	if !strings.Contains(string(b), bad) {
		t.Fatalf("struct bytes not carried")
	}
}

// Through the protocol: get_path is Kong's normalize of the raw path, and
// a value that is not UTF-8 reaches go-pdk, which fails the PDK call with
// an error the plugin sees (the event goes on, as behind Kong).
func TestRawBytesReachThePlugin(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	e := startEmu(t, fill(oneRouteYAML, "UPSTREAM", up.URL), nil)
	raw := func(path, extra string) http.Header {
		t.Helper()
		c, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write([]byte("GET " + path + " HTTP/1.1\r\nHost: kong\r\nConnection: close\r\n" + extra + "\r\n"))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		res := doDecode(t, resp)
		return res.Header
	}
	h := raw("/t/Abc%20123%C3%B8%2f/parent/..//test/./?q=1", "X-Test-Mode: path\r\n")
	if got, want := h.Get("X-Seen-Path"), `"/t/Abc 123ø%2F/test/" <nil>`; got != want {
		t.Errorf("get_path: %s, want %s", got, want)
	}
	h = raw("/%ff", "X-Test-Mode: path\r\n")
	if got := h.Get("X-Seen-Path"); !strings.Contains(got, "invalid UTF-8") {
		t.Errorf("get_path of /%%ff: %s, want go-pdk's UTF-8 error", got)
	}
	h = raw("/", "X-Test-Mode: bytes\r\nX-Bytes: caf\xe9\r\n")
	got := h.Get("X-Seen-Bytes")
	one, all, _ := strings.Cut(got, " | ")
	if !strings.Contains(one, "invalid UTF-8") || !strings.Contains(all, "invalid UTF-8") {
		t.Errorf("plugin saw %q, want go-pdk's UTF-8 error from get_header and get_headers", got)
	}
	if !utf8.ValidString(got) {
		t.Errorf("the error carries the bytes: %q", got)
	}
}

// Kong keeps its connection to the plugin socket alive between events
// (setkeepalive after each RpcReturn, rpc/pb_rpc.lua). After
// kong.response.exit it does not: exit yields the plugin's coroutine
// inside the PDK call (kong/pdk/response.lua with ctx.delay_response set by
// kong/init.lua), the call is never answered and the connection goes with
// the request; go-pdk closes its end after Exit anyway.
func TestPluginConnectionReuse(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	e := startEmu(t, fill(oneRouteYAML, "UPSTREAM", up.URL), nil)
	dials := func() int { return strings.Count(e.logs.String(), "plugin socket connected") }
	before := dials()
	for range 20 {
		if res := e.do(t, "GET", "/", nil); res.status != 200 {
			t.Fatalf("status %d", res.status)
		}
	}
	if n := dials() - before; n > 1 {
		t.Errorf("20 sequential events opened %d connections, want at most 1", n)
	}
	before = dials()
	for range 5 {
		if res := e.do(t, "GET", "/", map[string]string{"X-Test-Mode": "exit"}); res.status != 418 {
			t.Fatalf("status %d", res.status)
		}
	}
	// The first exit runs on the connection kept from before; none is
	// reused after an exit.
	if n := dials() - before; n != 4 {
		t.Errorf("5 exits opened %d connections, want 4", n)
	}
}
