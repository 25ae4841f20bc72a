// Command bare is the baseline of bench/http.sh: a fasthttp server with the
// sidecar's server settings (sidecar.Start) that answers
// POST /internal/v1/verify with a canned verify envelope — by default one
// captured from the real sidecar, so both send the same bytes — after
// reading the request body, and does nothing else: no secret check, no JSON,
// no lookup, no policy. The sidecar's verify rate over this one's, measured
// in the same run with the same load, is docs/CONTRACT.md §10.5's "≥ 0.8 × a bare fasthttp
// handler".
//
//	bare --listen 127.0.0.1:8181 [--body-file F]
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/valyala/fasthttp"
)

// maxBodySize is sidecar.MaxBodySize.
const maxBodySize = 64 << 10

// defaultBody is an allowed verify answer of the sidecar for a key with two
// scopes and a 10-entry whitelist (the shape bench/keygen writes).
const defaultBody = `{"version":"1.3.0","timestamp":1709337600000,"success":true,"code":"2000","message":"SUCCESS","requestId":"wrk","data":{"allow":true,"denyCode":"","apiKeyId":"sk_live_0000000000000000","workspaceId":"bench-ws-000000","mode":"LIVE","scopes":["payment:read","payment:write"],"ipWhitelist":["10.0.0.0/16","10.1.0.0/16","10.2.0.0/16","10.3.0.0/16","10.4.0.0/16","10.5.0.0/16","10.6.0.0/16","10.7.0.0/16","10.8.0.0/16","10.9.0.0/16"]}}`

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bare:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:8181", "TCP address to listen on")
	bodyFile := flag.String("body-file", "", "the canned answer (default: a built-in verify envelope)")
	flag.Parse()
	body := []byte(defaultBody)
	if *bodyFile != "" {
		var err error
		if body, err = os.ReadFile(*bodyFile); err != nil {
			return err
		}
		if len(body) == 0 {
			return errors.New("--body-file is empty")
		}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	handler := func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) != "/internal/v1/verify" || !ctx.IsPost() {
			ctx.SetStatusCode(fasthttp.StatusNotFound)
			return
		}
		_ = ctx.PostBody()
		ctx.SetStatusCode(fasthttp.StatusOK)
		ctx.Response.Header.SetContentType("application/json")
		ctx.Response.Header.SetBytesV("X-Request-Id", ctx.Request.Header.Peek("X-Request-Id"))
		ctx.SetBody(body)
	}
	// The options of sidecar.Start (sidecar/server.go): keep them in step.
	srv := &fasthttp.Server{
		Handler:                       handler,
		Name:                          "keygate-sidecar",
		MaxRequestBodySize:            16 * maxBodySize,
		ReadBufferSize:                16 << 10,
		ReadTimeout:                   10 * time.Second,
		WriteTimeout:                  10 * time.Second,
		IdleTimeout:                   120 * time.Second,
		Concurrency:                   16 << 10,
		DisableHeaderNamesNormalizing: false,
		NoDefaultServerHeader:         true,
		NoDefaultContentType:          true,
		CloseOnShutdown:               true,
	}
	fmt.Fprintf(os.Stderr, "bare: listening on %s (%d-byte answer)\n", ln.Addr(), len(body))
	return srv.Serve(ln)
}
