package plugin

import (
	"strconv"
	"strings"
	"sync"
	"time"
)

// Operator-visible logging through Kong.
//
// Kong copies the plugin server's stdout and stderr to its error log at
// INFO (kong/runloop/plugin_servers/process.lua, grab_logs, in the 3.8.0
// and 3.9.0 tags), and Kong's default log_level is notice
// (kong/templates/kong_defaults.lua): by default every JSON line the plugin
// writes to stderr is dropped. What an operator must see — a refused
// configuration, a key service that cannot be reached or is too slow, a
// PDK call that failed, a panic — is therefore also written through
// kong.log.err / kong.log.warn (kong/pdk/log.lua), which Kong logs at that
// level with the plugin's name. Each is one PDK call, made on those
// failure paths only: an allowed request never logs.
//
// A failing sidecar would otherwise log once per request. Lines are
// rate-limited per subject (the kind of failure and the sidecar it
// concerns; for a refused configuration, the line itself — never a memory
// address, which a later instance can reuse and so lose its first line): at most one per kongLogEvery; the next one says how
// many were left out in between. The JSON lines on stderr are not limited.

// kongLevel is the kong.log function a line goes to.
type kongLevel uint8

const (
	kongErr    kongLevel = iota // kong.log.err
	kongWarn                    // kong.log.warn
	kongNotice                  // kong.log.notice
)

// kongLogEvery is the shortest interval between two kong.log lines of one
// subject.
const kongLogEvery = 30 * time.Second

// maxKongLogSubjects bounds the rate limiter's state; when it is full the
// state is dropped and started afresh (at worst one extra line each).
const maxKongLogSubjects = 4096

type kongLogState struct {
	last       time.Time
	suppressed int
}

var kongLogGate = struct {
	sync.Mutex
	m map[string]*kongLogState
}{m: map[string]*kongLogState{}}

// kongLogAllowed reports whether a line of subject may be written at now
// and how many lines of it were left out since the last one written.
func kongLogAllowed(subject string, now time.Time) (bool, int) {
	kongLogGate.Lock()
	defer kongLogGate.Unlock()
	st := kongLogGate.m[subject]
	if st == nil {
		if len(kongLogGate.m) >= maxKongLogSubjects {
			kongLogGate.m = map[string]*kongLogState{}
		}
		kongLogGate.m[subject] = &kongLogState{last: now}
		return true, 0
	}
	if now.Sub(st.last) < kongLogEvery && !now.Before(st.last) {
		st.suppressed++
		return false, 0
	}
	n := st.suppressed
	st.last, st.suppressed = now, 0
	return true, n
}

// kongLog writes msg through kong.log at level, at most once per
// kongLogEvery for subject. msg must carry no secret; it is made valid
// UTF-8 (go-pdk refuses to send anything else).
func (r *call) kongLog(level kongLevel, subject, msg string) {
	now := timeNow()
	if r.in != nil {
		now = r.in.now()
	}
	ok, skipped := kongLogAllowed(subject, now)
	if !ok {
		return
	}
	if r.reqID != "" {
		msg += " (request " + r.reqID + ")"
	}
	if skipped > 0 {
		msg += "; " + strconv.Itoa(skipped) + " more like it since the last such line"
	}
	r.k.log(level, strings.ToValidUTF8(msg, "\uFFFD"))
}
