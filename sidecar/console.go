package sidecar

import (
	"bytes"
	"embed"
	"strings"

	"github.com/keygate/keygate/internal/envelope"
	"github.com/valyala/fasthttp"
)

// The owner console (docs/CONTRACT.md §2.3): one static page embedded in the binary. It
// calls the management API through the gateway with the owner's JWT, so it
// enforces nothing itself and is served without authentication.
//
//go:embed console/index.html console/console.js console/console.css
var consoleFiles embed.FS

// consoleAssets maps the path under /console/ to the embedded file and its
// media type. Only these paths are served; nothing is looked up by the
// request path, so there is no traversal to guard against.
var consoleAssets = map[string]struct{ file, contentType string }{
	"":            {"console/index.html", "text/html; charset=utf-8"},
	"index.html":  {"console/index.html", "text/html; charset=utf-8"},
	"console.js":  {"console/console.js", "text/javascript; charset=utf-8"},
	"console.css": {"console/console.css", "text/css; charset=utf-8"},
}

// consoleCSP allows only the page's own files and same-origin API calls: no
// inline script or style, no framing, no plugins, no form posts elsewhere.
const consoleCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func consoleHeaders(h *fasthttp.ResponseHeader) {
	h.Set("Content-Security-Policy", consoleCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}

// consoleIndexHandover is index.html as served with Config.ConsoleHandover:
// the page then reads a token handed over in the URL fragment.
var consoleIndexHandover = func() []byte {
	b, _ := consoleFiles.ReadFile("console/index.html")
	return bytes.Replace(b, []byte(`data-handover="off"`), []byte(`data-handover="on"`), 1)
}()

// serveConsole answers /console and /console/…; handover serves the page
// that accepts a token in the URL fragment (Config.ConsoleHandover).
func serveConsole(ctx *fasthttp.RequestCtx, rid, path string, handover bool) {
	consoleHeaders(&ctx.Response.Header)
	if !ctx.IsGet() && !ctx.IsHead() {
		methodNotAllowed(ctx, rid, "GET, HEAD")
		return
	}
	if path == "/console" {
		// Relative, so it works behind any gateway prefix-preserving route.
		ctx.Response.Header.Set("Location", "console/")
		ctx.SetStatusCode(fasthttp.StatusMovedPermanently)
		return
	}
	a, ok := consoleAssets[strings.TrimPrefix(path, "/console/")]
	if !ok {
		reply(ctx, rid, envelope.NotFound, "Not found", nil)
		return
	}
	body, _ := consoleFiles.ReadFile(a.file)
	if handover && a.file == "console/index.html" {
		body = consoleIndexHandover
	}
	ctx.Response.Header.Set("X-Request-Id", rid)
	ctx.Response.Header.SetContentType(a.contentType)
	ctx.SetBody(body)
}
