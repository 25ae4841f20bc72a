// Command testplugin is a small go-pdk plugin that kongemu's tests drive
// through the real plugin-server protocol. The X-Test-Mode request header
// chooses what it does.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/Kong/go-pdk"
	"github.com/Kong/go-pdk/client"
	"github.com/Kong/go-pdk/server"
)

// Config is the plugin configuration.
type Config struct {
	Tag     string   `json:"tag"`
	SleepMs int      `json:"sleep_ms"`
	Flags   []string `json:"flags"`
	// Seq is Kong's __seq__, which Kong adds to every config it sends.
	Seq int `json:"__seq__"`
}

// New makes a Config for go-pdk.
func New() interface{} { return &Config{} }

// Access handles the access phase.
func (c *Config) Access(kong *pdk.PDK) {
	mode, _ := kong.Request.GetHeader("x-test-mode")
	switch mode {
	case "": // one PDK call, then proxy
	case "exit":
		body, _ := json.Marshal(map[string]string{"tag": c.Tag, "why": "asked"})
		kong.Response.Exit(418, body, map[string][]string{
			"Content-Type": {"application/json"},
			"X-Exit":       {"a", "b"},
		})
	case "unknown":
		_, _ = kong.Client.LoadConsumer("nobody", false)
	case "sleep":
		time.Sleep(time.Duration(c.SleepMs) * time.Millisecond)
	case "path": // kong.request.get_path, or the error go-pdk gives
		p, err := kong.Request.GetPath()
		_ = kong.ServiceRequest.SetHeader("X-Seen-Path", fmt.Sprintf("%q %v", p, err))
	case "bytes": // a header value that is not UTF-8, one way and the other
		one, err1 := kong.Request.GetHeader("x-bytes")
		all, err2 := kong.Request.GetHeaders(100)
		_ = kong.ServiceRequest.SetHeader("X-Seen-Bytes", fmt.Sprintf("%q %v | %d %v", one, err1, len(all), err2))
	case "seq":
		_ = kong.ServiceRequest.SetHeader("X-Plugin-Seq", c.Tag+"/"+strconv.Itoa(c.Seq))
	case "pid":
		_ = kong.ServiceRequest.SetHeader("X-Plugin-Pid", strconv.Itoa(os.Getpid()))
	case "ips":
		ip, _ := kong.Client.GetIp()
		fip, _ := kong.Client.GetForwardedIp()
		port, _ := kong.Client.GetPort()
		fport, _ := kong.Client.GetForwardedPort()
		_ = kong.ServiceRequest.SetHeaders(map[string][]string{
			"X-Seen-Ip":             {ip},
			"X-Seen-Forwarded-Ip":   {fip},
			"X-Seen-Port":           {strconv.Itoa(port)},
			"X-Seen-Forwarded-Port": {strconv.Itoa(fport)},
		})
	case "full":
		c.full(kong)
	case "underscore": // what kong.request sees of X_Api_Key_Id
		one, _ := kong.Request.GetHeader("x_api_key_id")
		all, _ := kong.Request.GetHeaders(100)
		var names []string
		for k := range all {
			if strings.Contains(k, "_") {
				names = append(names, k)
			}
		}
		sort.Strings(names)
		_ = kong.ServiceRequest.SetHeader("X-Seen-Underscore", one+"|"+strings.Join(names, ","))
	case "env": // the environment the plugin server process got
		env := os.Environ()
		sort.Strings(env)
		_ = kong.ServiceRequest.SetHeader("X-Seen-Env", strings.Join(env, ","))
	case "log": // its own output, and one kong.log call per level
		fmt.Println("stdout-line")
		fmt.Fprintln(os.Stderr, "stderr-line")
		_ = kong.Log.Debug("klog-debug")
		_ = kong.Log.Info("klog-info")
		_ = kong.Log.Notice("klog-notice")
		_ = kong.Log.Warn("klog-warn")
		_ = kong.Log.Err("klog-err")
	}
}

func (c *Config) full(kong *pdk.PDK) {
	h, _ := kong.Request.GetHeaders(100)
	method, _ := kong.Request.GetMethod()
	path, _ := kong.Request.GetPath()
	pwq, _ := kong.Request.GetPathWithQuery()
	rq, _ := kong.Request.GetRawQuery()
	q, _ := kong.Request.GetQueryArg("q")
	host, _ := kong.Request.GetHost()
	scheme, _ := kong.Request.GetScheme()
	missing, _ := kong.Request.GetHeader("x-not-there")
	_ = kong.Client.Authenticate(nil, &client.AuthenticatedCredential{Id: "cred-1", ConsumerId: "cons-1"})
	cred, _ := kong.Client.GetCredential()
	_ = kong.Ctx.SetShared("k", "shared-value")
	shared, _ := kong.Ctx.GetSharedString("k")
	route, _ := kong.Router.GetRoute()
	svc, _ := kong.Router.GetService()
	_ = kong.Log.Info("hello from ", c.Tag)
	_ = kong.ServiceRequest.ClearHeader("X-Remove-Me")
	_ = kong.ServiceRequest.AddHeader("X-Multi", "two")
	_ = kong.Response.SetHeader("X-Resp-Plugin", "yes")
	_ = kong.ServiceRequest.SetHeaders(map[string][]string{
		"X-Plugin-Tag":    {c.Tag},
		"X-Plugin-Flags":  {strings.Join(c.Flags, ",")},
		"X-Seen-Headers":  {strings.Join(h["x-multi"], "|")},
		"X-Seen-Host":     {host + "|" + strings.Join(h["host"], "")},
		"X-Seen-Request":  {method + " " + path + " " + pwq + " " + rq + " " + q + " " + scheme},
		"X-Seen-Missing":  {"[" + missing + "]"},
		"X-Seen-Cred":     {cred.Id + "/" + cred.ConsumerId},
		"X-Seen-Shared":   {shared},
		"X-Seen-Route":    {route.Name + "|" + strconv.FormatBool(route.StripPath) + "|" + route.Service.Id},
		"X-Seen-Service":  {svc.Name + "|" + svc.Host + "|" + svc.Id},
		"X-Seen-Upstream": {strconv.Itoa(svc.Port)},
	})
}

func main() {
	_ = server.StartServer(New, "0.1.0", 1000)
}
