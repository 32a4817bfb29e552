//go:build !linux

package bench

import (
	"context"
	"time"
)

// ioWait waits d. Without Linux's timerfd it waits on a Go timer, as the
// sleep wait does.
func ioWait(ctx context.Context, d time.Duration) error { return sleepWait(ctx, d) }
