package kongemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	kpp "github.com/Kong/go-pdk/server/kong_plugin_protocol"
	"google.golang.org/protobuf/proto"
)

// errExited is returned by a PDK handler for kong.response.exit: Kong ends
// the request there, never answers the call and drops the connection.
var errExited = errors.New("kongemu: plugin called kong.response.exit")

// PDKError is a PDK call kongemu cannot answer: an unsupported method or
// bad arguments. The request fails with 500.
type PDKError struct {
	Method string
	Err    error
}

func (e *PDKError) Error() string { return fmt.Sprintf("PDK call %s: %v", e.Method, e.Err) }
func (e *PDKError) Unwrap() error { return e.Err }

// errUnsupported is wrapped in a PDKError for methods kongemu does not serve.
var errUnsupported = errors.New("method not supported by kongemu")

// instance is one plugin entry of a compiled declarative config. Kong
// gives every entry a new __seq__ each time it builds its plugin configs
// (kong/runloop/plugins_iterator.lua get_plugin_config, 3.8.1 and 3.9.1),
// so a reloaded entry is a new instance with a new seq.
type instance struct {
	name, pluginID, where string
	seq                   int32 // Kong's __seq__; go-pdk uses it as the instance id
	config                map[string]any
}

// running is the plugin instance started for a plugin id (Kong's
// running_instances, kong/runloop/plugin_servers/init.lua 3.8.1;
// plugin_servers/plugin.lua 3.9.1).
type running struct {
	id  int32
	seq int32
	gen uint64 // process generation it was started in
}

// pconn is one connection to the plugin socket; one call at a time.
type pconn struct {
	c   net.Conn
	r   *bufio.Reader
	gen uint64
}

// client talks to the plugin server: a bounded pool of kept-alive
// connections (Kong opens one per concurrent call and keeps it alive).
type client struct {
	proc     *process
	logger   *slog.Logger
	seq      atomic.Int64
	slots    chan struct{} // bounds open connections
	dialWait time.Duration

	mu   sync.Mutex
	idle []*pconn

	instMu  sync.Mutex // held while starting an instance
	running map[string]*running
}

func newClient(proc *process, maxConns int, logger *slog.Logger) *client {
	return &client{proc: proc, logger: logger, slots: make(chan struct{}, maxConns), dialWait: 3 * time.Second,
		running: map[string]*running{}}
}

// get returns a connection of the current process generation, dialling
// (and waiting for a restarting plugin) if none is idle.
func (cl *client) get(ctx context.Context) (*pconn, error) {
	select {
	case cl.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for a plugin connection: %w", ctx.Err())
	}
	gen := cl.proc.gen.Load()
	cl.mu.Lock()
	for len(cl.idle) > 0 {
		pc := cl.idle[len(cl.idle)-1]
		cl.idle = cl.idle[:len(cl.idle)-1]
		if pc.gen == gen {
			cl.mu.Unlock()
			return pc, nil
		}
		pc.c.Close()
	}
	cl.mu.Unlock()

	dctx, cancel := context.WithTimeout(ctx, cl.dialWait)
	defer cancel()
	for {
		gen = cl.proc.gen.Load()
		var d net.Dialer
		c, err := d.DialContext(dctx, "unix", cl.proc.socket)
		if err == nil {
			cl.logger.Debug("plugin socket connected", "socket", cl.proc.socket)
			return &pconn{c: c, r: bufio.NewReader(c), gen: gen}, nil
		}
		select {
		case <-dctx.Done():
			<-cl.slots
			return nil, fmt.Errorf("connect to plugin socket: %w", err)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// put returns a healthy connection to the pool or closes it.
func (cl *client) put(pc *pconn, healthy bool) {
	if healthy && pc.gen == cl.proc.gen.Load() {
		cl.mu.Lock()
		cl.idle = append(cl.idle, pc)
		cl.mu.Unlock()
	} else {
		pc.c.Close()
	}
	<-cl.slots
}

func (cl *client) closeIdle() {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for _, pc := range cl.idle {
		pc.c.Close()
	}
	cl.idle = nil
}

// call sends one RpcCall and reads its RpcReturn. With pdk non-nil it
// serves PDK calls (method frame, argument frame, reply frame) until the
// plugin writes the empty frame that ends the event.
func (cl *client) call(ctx context.Context, pc *pconn, m *kpp.RpcCall, pdk func(method string, args []byte) ([]byte, error)) (*kpp.RpcReturn, error) {
	if dl, ok := ctx.Deadline(); ok {
		pc.c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { pc.c.SetDeadline(time.Now()) })
	defer stop()

	m.Sequence = cl.seq.Add(1)
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	if err := writeFrame(pc.c, b); err != nil {
		return nil, err
	}
	for pdk != nil {
		method, err := readFrame(pc.r)
		if err != nil {
			return nil, err
		}
		if len(method) == 0 {
			break
		}
		args, err := readFrame(pc.r)
		if err != nil {
			return nil, err
		}
		reply, err := pdk(string(method), args)
		if err != nil {
			return nil, err
		}
		if err := writeFrame(pc.c, reply); err != nil {
			return nil, err
		}
	}
	b, err = readFrame(pc.r)
	if err != nil {
		return nil, err
	}
	var ret kpp.RpcReturn
	if err := proto.Unmarshal(b, &ret); err != nil {
		return nil, fmt.Errorf("decode RpcReturn: %w", err)
	}
	if ret.Sequence != m.Sequence {
		return nil, fmt.Errorf("RpcReturn sequence %d, want %d", ret.Sequence, m.Sequence)
	}
	return &ret, nil
}

// ensure returns the id of the plugin instance for in, starting it first
// when none runs for its plugin id with its __seq__ in the current
// process. As Kong's get_instance_id does, a new instance replaces one of
// an older seq, which is then closed with cmd_close_instance (errors
// ignored: another worker may have closed it).
func (cl *client) ensure(ctx context.Context, in *instance) (int32, error) {
	cl.instMu.Lock()
	defer cl.instMu.Unlock()
	gen := cl.proc.gen.Load()
	old := cl.running[in.pluginID]
	if old != nil && old.seq == in.seq && old.gen == gen && gen != 0 {
		return old.id, nil
	}
	id, err := cl.startInstance(ctx, in)
	if err != nil {
		delete(cl.running, in.pluginID)
		return 0, err
	}
	cl.running[in.pluginID] = &running{id: id, seq: in.seq, gen: gen}
	if old != nil && old.gen == gen && old.id != id {
		cl.closeInstance(ctx, old.id)
	}
	return id, nil
}

// startInstance sends cmd_start_instance with the entry's config and the
// fields Kong adds (__seq__, __plugin_id, __key__).
func (cl *client) startInstance(ctx context.Context, in *instance) (int32, error) {
	conf := make(map[string]any, len(in.config)+3)
	for k, v := range in.config {
		conf[k] = v
	}
	conf["__seq__"] = in.seq
	conf["__plugin_id"] = in.pluginID
	conf["__key__"] = in.pluginID
	cj, err := json.Marshal(conf)
	if err != nil {
		return 0, fmt.Errorf("encode config of %s: %w", in.where, err)
	}
	ret, err := cl.roundTrip(ctx, &kpp.RpcCall{Call: &kpp.RpcCall_CmdStartInstance{
		CmdStartInstance: &kpp.CmdStartInstance{Name: in.name, Config: cj},
	}})
	if err != nil {
		return 0, fmt.Errorf("start instance for %s: %w", in.where, err)
	}
	st := ret.GetInstanceStatus()
	if st == nil {
		return 0, fmt.Errorf("start instance for %s: no instance status in reply", in.where)
	}
	cl.logger.Info("plugin instance started", "plugin", in.name, "entry", in.where, "seq", in.seq, "instance_id", st.InstanceId)
	return st.InstanceId, nil
}

// closeInstance sends cmd_close_instance.
func (cl *client) closeInstance(ctx context.Context, id int32) {
	_, err := cl.roundTrip(ctx, &kpp.RpcCall{Call: &kpp.RpcCall_CmdCloseInstance{
		CmdCloseInstance: &kpp.CmdCloseInstance{InstanceId: id},
	}})
	cl.logger.Info("plugin instance closed", "instance_id", id, "err", err)
}

// roundTrip sends one call without PDK calls on a pooled connection.
func (cl *client) roundTrip(ctx context.Context, m *kpp.RpcCall) (*kpp.RpcReturn, error) {
	pc, err := cl.get(ctx)
	if err != nil {
		return nil, err
	}
	ret, err := cl.call(ctx, pc, m, nil)
	cl.put(pc, err == nil)
	return ret, err
}

// resetInstances forgets every running instance, as Kong's reset_instance
// does for all instances of the plugin when an event finds the connection
// closed (kong/runloop/plugin_servers/init.lua 3.8.1).
func (cl *client) resetInstances() {
	cl.instMu.Lock()
	clear(cl.running)
	cl.instMu.Unlock()
}

// handleEvent runs the access event of an instance for one request. As
// Kong does, a dropped connection ("no plugin instance", a restarted
// plugin) resets the instance and retries once.
func (cl *client) handleEvent(ctx context.Context, in *instance, st *reqState) error {
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		if attempt > 0 {
			cl.logger.Warn("plugin event failed, restarting instance and retrying", "entry", in.where, "err", err)
			cl.resetInstances()
			cl.closeIdle()
		}
		st.resetEvent()
		var id int32
		id, err = cl.ensure(ctx, in)
		if err != nil {
			if retryable(ctx, err) {
				continue
			}
			return err
		}
		var pc *pconn
		pc, err = cl.get(ctx)
		if err != nil {
			return err
		}
		_, err = cl.call(ctx, pc, &kpp.RpcCall{Call: &kpp.RpcCall_CmdHandleEvent{
			CmdHandleEvent: &kpp.CmdHandleEvent{InstanceId: id, EventName: "access"},
		}}, st.dispatch)
		cl.put(pc, err == nil)
		if err == nil || errors.Is(err, errExited) {
			return nil
		}
		if !retryable(ctx, err) {
			return err
		}
	}
	return err
}

// retryable reports a connection the plugin closed (what Kong matches as
// "closed"), not a timeout or a PDK error.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var pe *PDKError
	if errors.As(err, &pe) {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, net.ErrClosed)
}
