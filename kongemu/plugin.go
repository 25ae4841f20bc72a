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
	"path/filepath"
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

// queryPlugin runs `bin -dump` (Kong's query_cmd) and validates the answer.
func queryPlugin(ctx context.Context, bin string) (*pluginInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "-dump")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("run %s -dump: %w (stderr: %q)", bin, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return parseDump(stdout.Bytes(), filepath.Base(bin))
}

func parseDump(b []byte, binName string) (*pluginInfo, error) {
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
	if p.Name != binName {
		return nil, fmt.Errorf("-dump: plugin name %q differs from the binary name %q", p.Name, binName)
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

// process supervises the plugin server process (Kong's start_cmd): it starts
// `bin -kong-prefix prefix`, logs its output and restarts it, at most once a
// second, when it dies. Every start bumps the generation: connections and
// instances of an older generation are stale.
type process struct {
	bin, prefix, socket string
	logger              *slog.Logger

	gen     atomic.Uint64
	pid     atomic.Int64
	started chan struct{} // closed after the first start attempt
	done    chan struct{} // closed when supervise returns
}

func newProcess(bin, prefix, name string, logger *slog.Logger) *process {
	return &process{
		bin: bin, prefix: prefix, socket: filepath.Join(prefix, name+".socket"),
		logger: logger, started: make(chan struct{}), done: make(chan struct{}),
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
		p.logger.Error("plugin server exited", "bin", p.bin, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(start.Add(time.Second))):
		}
	}
}

func (p *process) runOnce(ctx context.Context, onStart func()) error {
	cmd := exec.CommandContext(ctx, p.bin, "-kong-prefix", p.prefix)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 2 * time.Second
	out := &lineLogger{logger: p.logger, name: filepath.Base(p.bin)}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		onStart()
		return err
	}
	out.pid.Store(int64(cmd.Process.Pid))
	p.pid.Store(int64(cmd.Process.Pid))
	p.gen.Add(1)
	p.logger.Info("plugin server started", "bin", p.bin, "pid", cmd.Process.Pid, "socket", p.socket)
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

// lineLogger logs each line a plugin process writes as Kong does,
// prefixed with [name:pid].
type lineLogger struct {
	logger *slog.Logger
	name   string
	pid    atomic.Int64
	mu     sync.Mutex
	buf    []byte
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
	l.logger.Info(fmt.Sprintf("[%s:%d]", l.name, l.pid.Load()), "line", string(bytes.TrimRight(line, "\r")))
}

// tempPrefix makes a private prefix directory; unix socket paths are short
// (108 bytes), so it lives under os.TempDir.
func tempPrefix() (string, error) {
	return os.MkdirTemp("", "kongemu-")
}
