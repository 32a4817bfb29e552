//go:build linux

package bench

import (
	"context"
	"testing"
	"time"
)

// TestIOWaitUsesTimerFD: on Linux the io wait goes through a timerfd,
// which it hands back for the next wait: after one wait a timer is free,
// and the next wait takes that same one (a wait on a Go timer would leave
// none).
func TestIOWaitUsesTimerFD(t *testing.T) {
	free := func() []*timerFD {
		timerFDs.mu.Lock()
		defer timerFDs.mu.Unlock()
		return append([]*timerFD(nil), timerFDs.free...)
	}
	if err := ioWait(context.Background(), time.Millisecond); err != nil {
		t.Fatal(err)
	}
	after := free()
	if len(after) == 0 {
		t.Fatal("no timerfd free after an io wait")
	}
	got, err := getTimerFD()
	if err != nil {
		t.Fatal(err)
	}
	defer putTimerFD(got)
	if got != after[len(after)-1] {
		t.Error("the next wait did not reuse the timerfd the last one gave back")
	}
}
