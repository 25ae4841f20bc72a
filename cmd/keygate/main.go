// Command keygate is the keygate Kong Go plugin: Kong starts it as a plugin
// server (pluginserver_keygate_start_cmd) and queries its schema with
// `keygate -dump`. All of the plugin is in package plugin.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/Kong/go-pdk/server"
	"github.com/keygate/keygate/internal/buildinfo"
	"github.com/keygate/keygate/plugin"
)

func main() {
	// go-pdk defines -kong-prefix, -dump and -help on the default flag set
	// and parses it in StartServer; parsing it here first is the same parse.
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Usage = usage
	flag.Parse()
	if flag.Lookup("help").Value.String() == "true" { // go-pdk's -help would exit 2
		usage()
		return
	}
	if *showVersion {
		fmt.Printf("keygate %s (plugin version %s)\n", buildinfo.Version(), plugin.Version)
		return
	}
	if err := server.StartServer(plugin.New, plugin.Version, plugin.Priority); err != nil {
		log.Fatal(explain(err))
	}
}

// socketPath is where go-pdk listens: <-kong-prefix>/<binary name>.socket.
func socketPath() string {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	return filepath.Join(flag.Lookup("kong-prefix").Value.String(), filepath.Base(exe)+".socket")
}

// registration is what kong.conf needs to run keygate with Kong's default
// prefix: the lines of kong/kong.conf, word for word (a test holds them to
// it).
const registration = `  plugins = bundled,keygate
  pluginserver_names = keygate
  pluginserver_keygate_query_cmd = /usr/local/bin/keygate -dump
  pluginserver_keygate_start_cmd = /usr/local/bin/keygate -kong-prefix /usr/local/kong
  pluginserver_keygate_socket = /usr/local/kong/keygate.socket
  nginx_main_env = KEYGATE_GATEWAY_SECRET; env KEYGATE_GATEWAY_SECRET_FILE; env KEYGATE_LOG_LEVEL
`

// explain turns the plugin server's failure to listen — what someone who
// runs keygate by hand sees first — into what keygate is and how Kong
// starts it.
func explain(err error) error {
	return errors.New(fmt.Sprintf("cannot listen on %s: %v\n", socketPath(), err) +
		"keygate is a Kong plugin server: Kong starts it itself and talks to it over that socket.\n" +
		"kong.conf registers it (kong/kong.conf):\n" + registration +
		"To run it by hand (as kongemu does), give a prefix directory that exists: keygate -kong-prefix DIR;\n" +
		"keygate -dump prints what Kong reads; keygate --help says more.")
}

// usage is --help.
func usage() {
	out := flag.CommandLine.Output()
	fmt.Fprintf(out, `keygate is the keygate Kong Go plugin (workspace API keys at the gateway):
a plugin server that Kong starts and talks to over a unix socket. Register it
in kong.conf (see kong/kong.conf; Kong 3.8 or later):

%s
Kong names the plugin after this binary, so it must be called keygate. It
listens on <kong-prefix>/keygate.socket (here %s). The gateway secret it
shares with keygate-sidecar comes from the plugin config or
$KEYGATE_GATEWAY_SECRET in Kong's environment (nginx_main_env).

Usage: keygate [-kong-prefix DIR] | keygate -dump | keygate --version

Flags:
`, registration, socketPath())
	flag.PrintDefaults()
}
