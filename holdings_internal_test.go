package pgq

import (
	"context"
	"errors"
	"log/slog"
	"testing"
)

// TestHoldingsCancelAll: Run's shutdown ends the contexts of the attempts
// held through the holdings (their parent is never canceled), with the
// shutdown's cause; an attempt added afterwards (a claim that was under
// way) starts canceled; one whose handler returned keeps its own end.
func TestHoldingsCancelAll(t *testing.T) {
	t.Parallel()
	h := newHoldings(slog.New(slog.DiscardHandler))
	parent := context.WithoutCancel(context.Background())
	att := func(id JobID) *attempt {
		a := &attempt{}
		a.jobValue.ID = id
		a.job = &a.jobValue
		return a
	}
	running, done := att(1), att(2)
	ctxs := h.add(parent, []*attempt{running, done})
	h.returned(done)
	if err := context.Cause(ctxs[0]); err != nil {
		t.Fatalf("a held attempt's context ended before the shutdown: %v", err)
	}

	h.cancelAll(errShutdown)
	if err := context.Cause(ctxs[0]); !errors.Is(err, errShutdown) {
		t.Fatalf("held attempt: cause %v, want %v", err, errShutdown)
	}
	if err := context.Cause(ctxs[1]); !errors.Is(err, context.Canceled) {
		t.Fatalf("returned attempt: cause %v, want its own end (%v)", err, context.Canceled)
	}

	late := h.add(parent, []*attempt{att(3)})
	if err := context.Cause(late[0]); !errors.Is(err, errShutdown) {
		t.Fatalf("attempt added after the shutdown: cause %v, want %v", err, errShutdown)
	}
	if parent.Err() != nil {
		t.Fatal("the parent was canceled")
	}
}
