// Command keygate is the keygate Kong Go plugin: Kong starts it as a plugin
// server (pluginserver_keygate_start_cmd) and queries its schema with
// `keygate -dump`. All of the plugin is in package plugin.
package main

import (
	"flag"
	"fmt"
	"log"

	"github.com/Kong/go-pdk/server"
	"github.com/keygate/keygate/internal/buildinfo"
	"github.com/keygate/keygate/plugin"
)

func main() {
	// go-pdk defines -kong-prefix, -dump and -help on the default flag set
	// and parses it in StartServer; parsing it here first is the same parse.
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Printf("keygate %s (plugin version %s)\n", buildinfo.Version(), plugin.Version)
		return
	}
	if err := server.StartServer(plugin.New, plugin.Version, plugin.Priority); err != nil {
		log.Fatal(err)
	}
}
