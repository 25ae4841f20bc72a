// Command keygate is the keygate Kong Go plugin: Kong starts it as a plugin
// server (pluginserver_keygate_start_cmd) and queries its schema with
// `keygate -dump`. All of the plugin is in package plugin.
package main

import (
	"log"

	"github.com/Kong/go-pdk/server"
	"github.com/keygate/keygate/plugin"
)

func main() {
	if err := server.StartServer(plugin.New, plugin.Version, plugin.Priority); err != nil {
		log.Fatal(err)
	}
}
