package kongemu

import (
	"net/http"
	"sort"
)

// nginx's request header buffers as Kong leaves them: Kong sets neither
// client_header_buffer_size nor large_client_header_buffers
// (kong/templates/nginx_kong.lua and kong_defaults.lua, 3.8.1 and 3.9.1),
// so nginx's defaults hold: one 1k buffer, then at most 4 buffers of 8k
// (ngx_http_core_module docs). A request line or header line must fit in
// one 8k buffer, and all lines in those buffers.
const (
	nginxHeaderBuffer      = 1 << 10
	nginxLargeBufferSize   = 8 << 10
	nginxLargeBufferNumber = 4
)

// headerLimit is what nginx answers a request over its header buffers:
// 414 for a request line too long, 494 (which Kong's error handler turns
// into 400 "Request header or cookie too large", kong/error_handlers.lua)
// for a header line or the whole header. 0 means the request fits.
//
// nginx measures the bytes as received; kongemu sees the request after
// Go's parser, so it rebuilds each line as "Name: value\r\n" (the client's
// optional blanks are not counted) and packs the header lines in name
// order rather than as sent. The per-line limit is exact to those blanks;
// the total is nginx's packing of the rebuilt lines.
func headerLimit(r *http.Request) (status int, message string) {
	reqLine := len(r.Method) + 1 + len(r.RequestURI) + 1 + len(r.Proto) + 2
	if reqLine > nginxLargeBufferSize {
		return http.StatusRequestURITooLong, "URI too long"
	}
	lines := make([]int, 0, len(r.Header)+1)
	if r.Host != "" {
		lines = append(lines, len("Host: ")+len(r.Host)+2)
	}
	names := make([]string, 0, len(r.Header))
	for name := range r.Header {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, v := range r.Header[name] {
			lines = append(lines, len(name)+2+len(v)+2)
		}
	}
	// The request line starts in the small buffer; when a line does not
	// fit where it started, nginx moves it to the next large buffer.
	size, used, large := nginxHeaderBuffer, reqLine, 0
	if used > size {
		size, used, large = nginxLargeBufferSize, reqLine, 1
	}
	for _, n := range append(lines, 2) { // the empty line ends the header
		if n > nginxLargeBufferSize {
			return 494, "Request header or cookie too large"
		}
		if used+n <= size {
			used += n
			continue
		}
		if large++; large > nginxLargeBufferNumber {
			return 494, "Request header or cookie too large"
		}
		size, used = nginxLargeBufferSize, n
	}
	return 0, ""
}
