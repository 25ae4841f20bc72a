package kongemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// dumpInfo is the part of `PLUGIN -dump` output kongemu uses.
type dumpInfo struct {
	Protocol   string
	SocketPath string
	Plugins    []struct {
		Name     string
		Version  string
		Priority int
		Phases   []string
		Schema   struct {
			Name   string `json:"name"`
			Fields []map[string]struct {
				Type   string           `json:"type"`
				Fields []map[string]any `json:"fields"`
			} `json:"fields"`
		}
	}
}

// pluginInfo is the validated result of -dump.
type pluginInfo struct {
	name, version string
	priority      int
	schema        pluginSchema
}

// queryPlugin runs the query command through /bin/sh, as Kong's io.popen
// does, with Kong's own environment: the query runs while Kong loads its
// plugins, before the workers drop their environment
// (kong/runloop/plugin_servers/process.lua, 3.8.1 and 3.9.1).
func queryPlugin(ctx context.Context, queryCmd string, env []string) (*pluginInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", queryCmd)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("run query command %q: %w (stderr: %q)", queryCmd, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return parseDump(stdout.Bytes())
}

// parseDump validates -dump output. Kong takes the plugin's name from the
// dump, whatever the server is called (process.lua, 3.9.1).
func parseDump(b []byte) (*pluginInfo, error) {
	var d dumpInfo
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("decode -dump output: %w", err)
	}
	if d.Protocol != "ProtoBuf:1" {
		return nil, fmt.Errorf("-dump: protocol %q, want ProtoBuf:1", d.Protocol)
	}
	if len(d.Plugins) != 1 {
		return nil, fmt.Errorf("-dump: %d plugins, want exactly 1", len(d.Plugins))
	}
	p := d.Plugins[0]
	if p.Name == "" {
		return nil, errors.New("-dump: the plugin has no name")
	}
	if !slices.Contains(p.Phases, "access") {
		return nil, fmt.Errorf("-dump: phases %v lack access", p.Phases)
	}
	info := &pluginInfo{name: p.Name, version: p.Version, priority: p.Priority}
	for _, f := range p.Schema.Fields {
		cfg, ok := f["config"]
		if !ok {
			continue
		}
		if cfg.Type != "record" {
			return nil, fmt.Errorf("-dump: config has type %q, want record", cfg.Type)
		}
		info.schema = pluginSchema{}
		for _, field := range cfg.Fields {
			for name := range field {
				info.schema = append(info.schema, name)
			}
		}
	}
	if info.schema == nil {
		return nil, errors.New("-dump: schema has no config record")
	}
	return info, nil
}

// process supervises the plugin server process as worker 0 of Kong does
// (kong/runloop/plugin_servers/process.lua, 3.8.1 and 3.9.1): it runs
// `exec START_CMD` through /bin/sh (ngx.pipe.spawn of a string) with the
// worker's environment, logs its merged stdout and stderr line by line and
// restarts it, at most once a second, when it dies. Every start bumps the
// generation: connections and instances of an older generation are stale.
type process struct {
	name, start, socket string
	env                 []string
	logger              *slog.Logger
	log                 *kongLog

	gen     atomic.Uint64
	pid     atomic.Int64
	started chan struct{} // closed after the first start attempt
	done    chan struct{} // closed when supervise returns
}

func newProcess(name, start, socket string, env []string, logger *slog.Logger, log *kongLog) *process {
	return &process{
		name: name, start: start, socket: socket, env: env, logger: logger, log: log,
		started: make(chan struct{}), done: make(chan struct{}),
	}
}

// supervise runs until ctx ends, then stops the process (SIGTERM, then
// SIGKILL after 2 s).
func (p *process) supervise(ctx context.Context) {
	defer close(p.done)
	var once sync.Once
	for {
		start := time.Now()
		err := p.runOnce(ctx, func() { once.Do(func() { close(p.started) }) })
		once.Do(func() { close(p.started) })
		if ctx.Err() != nil {
			return
		}
		p.log.log(LevelNotice, fmt.Sprintf("external pluginserver '%s' terminated: %v", p.name, err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(start.Add(time.Second))):
		}
	}
}

func (p *process) runOnce(ctx context.Context, onStart func()) error {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", "exec "+p.start)
	cmd.Env = p.env
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 2 * time.Second
	out := &lineLogger{log: p.log, name: p.name}
	cmd.Stdout, cmd.Stderr = out, out
	p.log.log(LevelNotice, "[pluginserver] starting pluginserver process for "+p.name)
	if err := cmd.Start(); err != nil {
		onStart()
		return err
	}
	out.pid.Store(int64(cmd.Process.Pid))
	p.pid.Store(int64(cmd.Process.Pid))
	p.gen.Add(1)
	p.log.log(LevelNotice, fmt.Sprintf("[pluginserver] started, pid %d", cmd.Process.Pid))
	onStart()
	err := cmd.Wait()
	out.flush()
	return err
}

// waitSocket waits until the plugin accepts connections on its socket.
func (p *process) waitSocket(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	select {
	case <-p.started:
	case <-ctx.Done():
		return fmt.Errorf("plugin server did not start: %w", ctx.Err())
	}
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", p.socket)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("plugin socket %s not ready within %s: %w", p.socket, timeout, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// kongLog is Kong's error log as far as the plugin is concerned: lines
// below log_level are dropped, the rest go to the logger with the nginx
// level in "kong_level".
type kongLog struct {
	logger *slog.Logger
	level  LogLevel
}

// slogLevel places nginx's levels on slog's scale (notice between info
// and warn; crit, alert and emerg above error).
func (l LogLevel) slogLevel() slog.Level { return slog.Level(int(l) * 2) }

func (k *kongLog) enabled(l LogLevel) bool { return l >= k.level }

func (k *kongLog) log(l LogLevel, msg string, args ...any) {
	if !k.enabled(l) {
		return
	}
	k.logger.Log(context.Background(), l.slogLevel(), msg, append([]any{"kong_level", l.String()}, args...)...)
}

// lineLogger logs each line a plugin process writes as Kong's grab_logs
// does: at INFO, prefixed with "[name:pid] " (process.lua, 3.8.1 and
// 3.9.1), so that at Kong's default log_level notice nothing of it shows.
type lineLogger struct {
	log  *kongLog
	name string
	pid  atomic.Int64
	mu   sync.Mutex
	buf  []byte
}

func (l *lineLogger) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, b...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.emit(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > 64<<10 { // a very long line: log it in pieces
		l.emit(l.buf)
		l.buf = nil
	}
	return len(b), nil
}

func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.emit(l.buf)
		l.buf = nil
	}
}

func (l *lineLogger) emit(line []byte) {
	if len(line) == 0 { // grab_logs skips empty lines
		return
	}
	l.log.log(LevelInfo, fmt.Sprintf("[%s:%d] %s", l.name, l.pid.Load(), bytes.TrimRight(line, "\r")))
}

// tempPrefix makes a private prefix directory; unix socket paths are short
// (108 bytes), so it lives under os.TempDir.
func tempPrefix() (string, error) {
	return os.MkdirTemp("", "kongemu-")
}
