package kongemu

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// FuzzReadFrame checks that the frame reader, fed bytes from another
// process, never panics, never returns more than MaxFrameSize bytes, and
// returns exactly the announced length when it succeeds.
func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{3, 0, 0, 0, 'a', 'b', 'c'})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := readFrame(bytes.NewReader(b))
		if err != nil {
			if len(b) >= 4 && binary.LittleEndian.Uint32(b) > MaxFrameSize && !errors.Is(err, ErrFrameTooLarge) {
				t.Fatalf("oversized frame not refused: %v", err)
			}
			return
		}
		n := binary.LittleEndian.Uint32(b)
		if uint32(len(got)) != n || len(got) > MaxFrameSize || !bytes.Equal(got, b[4:4+n]) {
			t.Fatalf("frame of %d bytes for length %d", len(got), n)
		}
	})
}

// FuzzParseDeclarative checks that loading and compiling any document
// never panics, and that a compiled table has routes with services.
func FuzzParseDeclarative(f *testing.F) {
	f.Add([]byte(mainYAML))
	f.Add([]byte("_format_version: \"3.0\"\nservices: [{name: a, url: http://a, routes: [{paths: [/]}]}]\n"))
	f.Add([]byte("_format_version: \"3.0\"\nroutes: [{service: {id: x}, paths: [/]}]\nplugins: [{name: testplugin, route: r}]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseDeclarative(b)
		if err != nil {
			return
		}
		tb, err := compile(d, "testplugin", pluginSchema{"tag", "sleep_ms", "flags"})
		if err != nil {
			return
		}
		for _, r := range tb.routes {
			if r.svc == nil || len(r.paths) == 0 {
				t.Fatalf("route %q compiled without service or paths", r.label())
			}
			_, _ = tb.match("GET", r.paths[0])
			_ = upstreamPath(r.svc.basePath, r.stripPath, r.paths[0], r.paths[0]+"/x")
		}
	})
}
