package pgq

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestWaitReportsItsCtxOverClose: a wait whose ctx ends while the watcher
// closes (a watcher made with that same ctx) returns ctx's error, not
// ErrClosed, even when the close reaches it first: here the close ends
// the wait under the watcher's lock, before the wait can see its ctx end.
func TestWaitReportsItsCtxOverClose(t *testing.T) {
	t.Parallel()
	w := &CompletionWatcher{
		waiting: map[JobID]map[*waiter]struct{}{},
		fresh:   map[JobID]struct{}{},
		began:   make(chan struct{}, 1),
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := make(chan error, 1)
	go func() {
		_, err := w.wait(ctx, []JobID{1}, 1)
		res <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, waits := w.pending(); waits == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the wait never registered")
		}
		time.Sleep(time.Millisecond)
	}
	w.mu.Lock()
	cancel()
	w.failAllLocked(ErrClosed)
	w.mu.Unlock()
	select {
	case err := <-res:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("wait whose ctx ended as the watcher closed = %v; want %v", err, context.Canceled)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the wait did not return")
	}
}
