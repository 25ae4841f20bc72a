package sidecar

import (
	"testing"
	"time"

	"github.com/keygate/keygate/internal/envelope"
)

// TestCountingAllocatesNothing: the counters and the store histogram are
// resolved at start-up, so counting on the verify path allocates nothing.
func TestCountingAllocatesNothing(t *testing.T) { // not parallel: AllocsPerRun
	m := newMetrics(newPushHub())
	if n := testing.AllocsPerRun(100, func() {
		m.countVerify(envelope.OK)
		m.countVerify(envelope.ScopeDenied)
		m.countManage(envelope.NotFound)
		m.observeDuration("lookup", time.Microsecond)
	}); n != 0 {
		t.Fatalf("counting allocates %v times", n)
	}
}
