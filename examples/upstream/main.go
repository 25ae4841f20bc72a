// Command upstream is the example product service behind the enforce route:
// it answers every request with JSON describing what reached it, so the demo
// and the end-to-end tests can see the headers keygate set and the
// credential it hid.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9090", "address to listen on")
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), "upstream is the example product service behind kong.yml's enforce routes:\n"+
			"it answers every request with JSON describing what reached it (method, path, headers).\n\nUsage: upstream [-listen ADDR]\n\nFlags:\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"service": "orders",
			"method":  r.Method,
			"path":    r.URL.Path,
			"headers": r.Header,
		})
	})
	srv := &http.Server{Addr: *listen, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	log.Printf("example upstream on %s", *listen)
	log.Fatal(srv.ListenAndServe())
}
