package kongemu

import (
	"crypto/sha1"
	"errors"
	"fmt"
	"net/http/httputil"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	kpp "github.com/Kong/go-pdk/server/kong_plugin_protocol"
)

// service is a compiled declarative service.
type service struct {
	id, name       string
	scheme         string // "http", "https" or "unix"
	host           string // host name or IP (empty for unix)
	port           int
	socket         string // unix socket path when scheme is "unix"
	basePath       string // escaped, never empty
	connectTimeout time.Duration
	readTimeout    time.Duration
	writeTimeout   time.Duration
	pb             *kpp.Service
}

// hostHeader is the Host Kong sends upstream when preserve_host is false.
func (s *service) hostHeader() string {
	if s.scheme == "unix" {
		return "localhost"
	}
	if (s.scheme == "http" && s.port == 80) || (s.scheme == "https" && s.port == 443) {
		return s.host
	}
	return joinHostPort(s.host, s.port)
}

// route is a compiled declarative route.
type route struct {
	id, name     string
	paths        []string
	methods      []string
	stripPath    bool
	preserveHost bool
	svc          *service
	inst         *instance // nil: the plugin does not run on this route
	pb           *kpp.Route
	order        int
}

func (r *route) label() string {
	if r.name != "" {
		return r.name
	}
	return r.id
}

// table is the compiled configuration: routes in declaration order and the
// plugin instances they use.
type table struct {
	routes    []*route
	instances []*instance
	proxies   map[*service]*httputil.ReverseProxy // set by server.install
}

// pluginSchema is what the plugin's -dump says about its config record:
// the field names. nil means "not checked".
type pluginSchema []string

// compile checks a Declarative against the plugin's name and schema and
// resolves references, plugin precedence (route > service > global) and
// defaults. Every problem found is returned at once.
func compile(d *Declarative, pluginName string, schema pluginSchema) (*table, error) {
	c := &compiler{
		t: &table{}, svcByRef: map[string]*service{},
		routeByDecl: map[*Route]*route{}, routeByRef: map[string]*route{},
	}
	c.walkServices(d.Services)
	c.walkRoutes(d.Routes)
	c.compileRoutes()
	c.resolvePlugins(d.Plugins)
	c.placePlugins(pluginName, schema)
	if len(c.t.routes) == 0 && len(c.errs) == 0 {
		c.fail("no routes configured")
	}
	return c.t, errors.Join(c.errs...)
}

// compiler holds the state of one compile: what was found so far and
// every problem.
type compiler struct {
	errs []error
	t    *table

	svcByRef    map[string]*service // by name and by id
	routes      []pendingRoute      // in declaration order
	plugins     []pendingPlugin
	routeByDecl map[*Route]*route
	routeByRef  map[string]*route // by name and by id
}

// pendingRoute is a declared route with its service, before compiling.
type pendingRoute struct {
	r     *Route
	svc   *service
	where string
}

// pendingPlugin is a plugin entry with the route or service it is scoped
// to (neither: global).
type pendingPlugin struct {
	p     *Plugin
	route *Route
	svc   *service
	where string
}

func (c *compiler) fail(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

// walkServices compiles the services and collects their nested routes
// and plugin entries.
func (c *compiler) walkServices(services []Service) {
	for i := range services {
		s := &services[i]
		cs := c.addService(i, s)
		for j := range s.Routes {
			r := &s.Routes[j]
			where := fmt.Sprintf("services[%d].routes[%d]", i, j)
			if r.Service != nil {
				c.fail("%s: nested route must not name a service", where)
			}
			c.routes = append(c.routes, pendingRoute{r, cs, where})
			for k := range r.Plugins {
				c.nested(&r.Plugins[k], r, nil, fmt.Sprintf("%s.plugins[%d]", where, k))
			}
		}
		for k := range s.Plugins {
			c.nested(&s.Plugins[k], nil, cs, fmt.Sprintf("services[%d].plugins[%d]", i, k))
		}
	}
}

// addService compiles one service and indexes it by name and id.
func (c *compiler) addService(i int, s *Service) *service {
	where := fmt.Sprintf("services[%d]", i)
	if s.Name != "" {
		where = fmt.Sprintf("service %q", s.Name)
	}
	cs, err := compileService(s)
	if err != nil {
		c.fail("%s: %w", where, err)
		return nil
	}
	for _, k := range []string{cs.name, cs.id} {
		if k == "" {
			continue
		}
		if _, dup := c.svcByRef[k]; dup {
			c.fail("%s: duplicate service name or id %q", where, k)
		}
		c.svcByRef[k] = cs
	}
	return cs
}

// nested collects a plugin entry nested in a route or service.
func (c *compiler) nested(p *Plugin, r *Route, svc *service, where string) {
	if p.Route != nil || p.Service != nil {
		c.fail("%s: a nested plugin must not name a route or service", where)
		return
	}
	if r == nil && svc == nil {
		return // its service failed to compile; already reported
	}
	c.plugins = append(c.plugins, pendingPlugin{p: p, route: r, svc: svc, where: where})
}

// service finds a service by name, then by id.
func (c *compiler) service(ref *Ref) *service {
	if cs := c.svcByRef[ref.Name]; cs != nil {
		return cs
	}
	return c.svcByRef[ref.ID]
}

// walkRoutes collects the top-level routes and their nested plugins.
func (c *compiler) walkRoutes(routes []Route) {
	for i := range routes {
		r := &routes[i]
		where := fmt.Sprintf("routes[%d]", i)
		var cs *service
		if r.Service == nil {
			c.fail("%s: a route needs a service", where)
		} else if cs = c.service(r.Service); cs == nil {
			c.fail("%s: unknown service %q", where, r.Service)
		}
		c.routes = append(c.routes, pendingRoute{r, cs, where})
		for k := range r.Plugins {
			c.nested(&r.Plugins[k], r, nil, fmt.Sprintf("%s.plugins[%d]", where, k))
		}
	}
}

// compileRoutes compiles every route in declaration order and indexes it.
func (c *compiler) compileRoutes() {
	for i, pr := range c.routes {
		cr, err := compileRoute(pr.r, pr.svc, i)
		if err != nil {
			c.fail("%s: %w", pr.where, err)
			continue
		}
		for _, k := range []string{cr.name, pr.r.ID} {
			if k == "" {
				continue
			}
			if _, dup := c.routeByRef[k]; dup {
				c.fail("%s: duplicate route name or id %q", pr.where, k)
			}
			c.routeByRef[k] = cr
		}
		c.routeByDecl[pr.r] = cr
		c.t.routes = append(c.t.routes, cr)
	}
}

// resolvePlugins resolves the route or service of top-level plugin
// entries.
func (c *compiler) resolvePlugins(plugins []Plugin) {
	for i := range plugins {
		p := &plugins[i]
		pp := pendingPlugin{p: p, where: fmt.Sprintf("plugins[%d]", i)}
		if p.Route != nil && p.Service != nil {
			c.fail("%s: plugins scoped to both a route and a service are not supported", pp.where)
			continue
		}
		if p.Route != nil {
			cr := c.routeByRef[p.Route.Name]
			if cr == nil {
				cr = c.routeByRef[p.Route.ID]
			}
			if cr == nil {
				c.fail("%s: unknown route %q", pp.where, p.Route)
				continue
			}
			for decl, got := range c.routeByDecl {
				if got == cr {
					pp.route = decl
				}
			}
		}
		if p.Service != nil {
			if pp.svc = c.service(p.Service); pp.svc == nil {
				c.fail("%s: unknown service %q", pp.where, p.Service)
				continue
			}
		}
		c.plugins = append(c.plugins, pp)
	}
}

// placePlugins checks each plugin entry, makes its instance and gives
// every route the instance that applies to it: the route's, else its
// service's, else the global one (disabled entries dropped first).
func (c *compiler) placePlugins(pluginName string, schema pluginSchema) {
	var global *instance
	bySvc := map[*service]*instance{}
	byRoute := map[*route]*instance{}
	for i, pp := range c.plugins {
		inst := c.pluginInstance(i, pp, pluginName, schema)
		if inst == nil {
			continue
		}
		switch {
		case pp.route != nil:
			cr := c.routeByDecl[pp.route]
			if cr == nil {
				continue // the route itself failed to compile
			}
			if byRoute[cr] != nil {
				c.fail("%s: plugin %q configured twice on route %q", pp.where, pp.p.Name, cr.label())
				continue
			}
			byRoute[cr] = inst
		case pp.svc != nil:
			if bySvc[pp.svc] != nil {
				c.fail("%s: plugin %q configured twice on service %q", pp.where, pp.p.Name, pp.svc.name)
				continue
			}
			bySvc[pp.svc] = inst
		default:
			if global != nil {
				c.fail("%s: plugin %q configured twice globally", pp.where, pp.p.Name)
				continue
			}
			global = inst
		}
		c.t.instances = append(c.t.instances, inst)
	}
	for _, cr := range c.t.routes {
		switch {
		case byRoute[cr] != nil:
			cr.inst = byRoute[cr]
		case bySvc[cr.svc] != nil:
			cr.inst = bySvc[cr.svc]
		default:
			cr.inst = global
		}
	}
}

// pluginInstance checks one plugin entry and makes its instance; nil when
// it is disabled or wrong (reported).
func (c *compiler) pluginInstance(i int, pp pendingPlugin, pluginName string, schema pluginSchema) *instance {
	p := pp.p
	if p.Name != pluginName {
		c.fail("%s: plugin %q is not supported by kongemu (only %q, the plugin binary)", pp.where, p.Name, pluginName)
		return nil
	}
	cfg, err := pluginConfig(p.Config, schema)
	if err != nil {
		c.fail("%s: %w", pp.where, err)
		return nil
	}
	if p.Enabled != nil && !*p.Enabled {
		return nil // Kong drops disabled plugins before precedence.
	}
	id := p.ID
	if id == "" {
		id = stableID("plugin", pp.where)
	}
	return &instance{name: p.Name, pluginID: id, seq: int32(i + 1), config: cfg, where: pp.where}
}

func compileService(s *Service) (*service, error) {
	var errs []error
	cs := &service{
		id:             s.ID,
		name:           s.Name,
		connectTimeout: msOr(s.ConnectTimeout, 60000),
		readTimeout:    msOr(s.ReadTimeout, 60000),
		writeTimeout:   msOr(s.WriteTimeout, 60000),
		scheme:         s.Protocol,
		host:           s.Host,
		port:           s.Port,
		basePath:       s.Path,
	}
	if cs.id == "" {
		seed := s.Name
		if seed == "" {
			seed = "|" + s.URL + "|" + s.Host
		}
		cs.id = stableID("service", seed)
	}
	if s.URL != "" {
		if s.Protocol != "" || s.Host != "" || s.Port != 0 {
			errs = append(errs, errors.New("give url or protocol/host/port, not both"))
		}
		u, err := url.Parse(s.URL)
		if err != nil {
			return nil, fmt.Errorf("url: %w", err)
		}
		cs.scheme = u.Scheme
		switch u.Scheme {
		case "unix":
			cs.socket = u.Path
			if cs.socket == "" {
				cs.socket = u.Opaque
			}
		case "http", "https":
			cs.host = u.Hostname()
			if p := u.Port(); p != "" {
				cs.port, err = strconv.Atoi(p)
				if err != nil {
					errs = append(errs, fmt.Errorf("url port: %w", err))
				}
			}
			if s.Path != "" && u.Path != "" {
				errs = append(errs, errors.New("give the path in url or in path, not both"))
			}
			if u.Path != "" {
				cs.basePath = u.EscapedPath()
			}
			if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
				errs = append(errs, errors.New("url must not have a query, fragment or user info"))
			}
		}
	}
	switch cs.scheme {
	case "http", "https":
		if cs.host == "" {
			errs = append(errs, errors.New("missing host"))
		}
		if cs.port == 0 {
			cs.port = 80
			if cs.scheme == "https" {
				cs.port = 443
			}
		}
	case "unix":
		if cs.socket == "" {
			errs = append(errs, errors.New("unix url needs a socket path"))
		}
	case "":
		errs = append(errs, errors.New("missing url"))
	default:
		errs = append(errs, fmt.Errorf("unsupported protocol %q (http, https, unix)", cs.scheme))
	}
	if cs.port < 0 || cs.port > 65535 {
		errs = append(errs, fmt.Errorf("bad port %d", cs.port))
	}
	if cs.basePath == "" {
		cs.basePath = "/"
	}
	if !strings.HasPrefix(cs.basePath, "/") {
		errs = append(errs, fmt.Errorf("path %q must start with /", cs.basePath))
	}
	cs.pb = &kpp.Service{
		Id: cs.id, Name: cs.name, Protocol: cs.scheme, Host: cs.host, Port: int32(cs.port),
		Path: cs.basePath, Retries: 5, Tags: s.Tags,
		ConnectTimeout: int32(cs.connectTimeout.Milliseconds()),
		ReadTimeout:    int32(cs.readTimeout.Milliseconds()),
		WriteTimeout:   int32(cs.writeTimeout.Milliseconds()),
	}
	if s.Retries != nil {
		cs.pb.Retries = int32(*s.Retries)
	}
	return cs, errors.Join(errs...)
}

func compileRoute(r *Route, svc *service, order int) (*route, error) {
	var errs []error
	cr := &route{id: r.ID, name: r.Name, svc: svc, stripPath: true, preserveHost: r.PreserveHost, order: order}
	if r.StripPath != nil {
		cr.stripPath = *r.StripPath
	}
	if cr.id == "" {
		cr.id = stableID("route", fmt.Sprintf("%s|%d", r.Name, order))
	}
	if len(r.Paths) == 0 {
		errs = append(errs, errors.New("paths: at least one path prefix is required by kongemu"))
	}
	for _, p := range r.Paths {
		switch {
		case strings.HasPrefix(p, "~"):
			errs = append(errs, fmt.Errorf("paths: regex path %q is not supported", p))
		case !strings.HasPrefix(p, "/"):
			errs = append(errs, fmt.Errorf("paths: %q must start with /", p))
		default:
			cr.paths = append(cr.paths, p)
		}
	}
	for _, m := range r.Methods {
		if m == "" || strings.ToUpper(m) != m {
			errs = append(errs, fmt.Errorf("methods: %q must be upper case", m))
		}
		cr.methods = append(cr.methods, m)
	}
	for _, p := range r.Protocols {
		if p != "http" && p != "https" {
			errs = append(errs, fmt.Errorf("protocols: %q is not supported (http, https)", p))
		}
	}
	if r.PathHandling != "" && r.PathHandling != "v0" {
		errs = append(errs, fmt.Errorf("path_handling %q is not supported (v0 only)", r.PathHandling))
	}
	protocols := r.Protocols
	if len(protocols) == 0 {
		protocols = []string{"http", "https"}
	}
	svcKey := &kpp.ServiceKey{}
	if svc != nil {
		svcKey.Id = svc.id
	}
	cr.pb = &kpp.Route{
		Id: cr.id, Name: cr.name, Protocols: protocols, Methods: cr.methods, Paths: cr.paths,
		StripPath: cr.stripPath, PreserveHost: cr.preserveHost, Tags: r.Tags, Service: svcKey,
		HttpsRedirectStatusCode: 426,
	}
	return cr, errors.Join(errs...)
}

// pluginConfig checks config keys against the plugin schema and fills every
// schema field that is not given with null, as Kong does for fields without
// a default (go-pdk schemas have none).
func pluginConfig(cfg map[string]any, schema pluginSchema) (map[string]any, error) {
	out := make(map[string]any, len(cfg)+len(schema))
	var errs []error
	for k, v := range cfg {
		if schema != nil && !slices.Contains(schema, k) {
			errs = append(errs, fmt.Errorf("config.%s: unknown field", k))
		}
		out[k] = v
	}
	for _, f := range schema {
		if _, ok := out[f]; !ok {
			out[f] = nil
		}
	}
	return out, errors.Join(errs...)
}

// match finds the route for a request: the longest matching path prefix
// among routes whose methods allow the request; on equal prefixes a route
// with methods beats one without, then declaration order.
func (t *table) match(method, reqPath string) (*route, string) {
	var best *route
	var bestPrefix string
	better := func(r *route, p string) bool {
		if best == nil || len(p) != len(bestPrefix) {
			return best == nil || len(p) > len(bestPrefix)
		}
		if (len(r.methods) > 0) != (len(best.methods) > 0) {
			return len(r.methods) > 0
		}
		return r.order < best.order
	}
	for _, r := range t.routes {
		if len(r.methods) > 0 && !slices.Contains(r.methods, method) {
			continue
		}
		for _, p := range r.paths {
			if strings.HasPrefix(reqPath, p) && better(r, p) {
				best, bestPrefix = r, p
			}
		}
	}
	return best, bestPrefix
}

// upstreamPath joins the service path and the request path as Kong's
// path_handling v0 does. reqPath and the result are escaped paths.
func upstreamPath(base string, stripPath bool, prefix, reqPath string) string {
	postfix := ""
	if stripPath {
		postfix = sanitizePostfix(reqPath[len(prefix):])
	}
	endsSlash := func(s string) bool { return strings.HasSuffix(s, "/") }
	if endsSlash(base) {
		if !stripPath {
			return base + reqPath[1:]
		}
		switch {
		case postfix == "":
			if base == "/" {
				return "/"
			}
			if endsSlash(reqPath) {
				return base
			}
			return base[:len(base)-1]
		case postfix[0] == '/':
			return base[:len(base)-1] + postfix
		default:
			return base + postfix
		}
	}
	if stripPath {
		switch {
		case postfix == "":
			if len(reqPath) > 1 && endsSlash(reqPath) {
				return base + "/"
			}
			return base
		case postfix[0] == '/':
			return base + postfix
		default:
			return base + "/" + postfix
		}
	}
	if reqPath == "/" {
		return base
	}
	return base + reqPath
}

func sanitizePostfix(p string) string {
	switch {
	case p == "." || p == "..":
		return ""
	case strings.HasPrefix(p, "./"):
		return p[2:]
	case strings.HasPrefix(p, "../"):
		return p[3:]
	}
	return p
}

// normalizePath is Kong's request path normalisation: percent-encoded
// unreserved characters are decoded, other escapes upper-cased, dot segments
// removed and repeated slashes merged. The input and output are escaped.
func normalizePath(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '%' && i+2 < len(p) && ishex(p[i+1]) && ishex(p[i+2]) {
			v := unhex(p[i+1])<<4 | unhex(p[i+2])
			if isUnreserved(v) {
				b.WriteByte(v)
			} else {
				b.WriteByte('%')
				b.WriteString(strings.ToUpper(p[i+1 : i+3]))
			}
			i += 2
			continue
		}
		b.WriteByte(c)
	}
	s := b.String()
	if s == "" {
		return "/"
	}
	trailing := strings.HasSuffix(s, "/") || strings.HasSuffix(s, "/.") || strings.HasSuffix(s, "/..")
	s = path.Clean("/" + s)
	if trailing && s != "/" {
		s += "/"
	}
	return s
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func msOr(ms, def int) time.Duration {
	if ms <= 0 {
		ms = def
	}
	return time.Duration(ms) * time.Millisecond
}

// stableID derives a UUID-shaped id from a seed so that entities without an
// id in the file keep the same id across runs.
func stableID(kind, seed string) string {
	h := sha1.Sum([]byte("kongemu:" + kind + ":" + seed))
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

func joinHostPort(host string, port int) string {
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return host + ":" + strconv.Itoa(port)
}
