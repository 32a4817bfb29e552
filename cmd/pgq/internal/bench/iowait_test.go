package bench

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestIOWait: the io wait lasts at least its time and ends early, with the
// context's error, when the context ends.
func TestIOWait(t *testing.T) {
	ctx := context.Background()
	for range 3 {
		start := time.Now()
		if err := ioWait(ctx, 3*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < 3*time.Millisecond || took > time.Second {
			t.Errorf("a 3 ms wait took %v", took)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := ioWait(cctx, time.Minute); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a 1 minute wait under a 20 ms context returned %v, want the context's error", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the cancelled wait took %v", took)
	}
	// After a cancelled wait the next one still waits its time.
	start = time.Now()
	if err := ioWait(ctx, 3*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 3*time.Millisecond {
		t.Errorf("a 3 ms wait after a cancelled one took %v", took)
	}
}
