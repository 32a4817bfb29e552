package pgq

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

// heldWrites is a database whose statements wait until released, and then
// fail: the progress writes it is given stay under way for as long as a
// test needs.
type heldWrites struct {
	started chan struct{}
	release chan struct{}
}

var errHeldWrite = errors.New("held write released")

func (h *heldWrites) wait() error {
	h.started <- struct{}{}
	<-h.release
	return errHeldWrite
}

func (h *heldWrites) ExecContext(context.Context, string, ...any) (sql.Result, error) {
	return nil, h.wait()
}

func (h *heldWrites) PrepareContext(context.Context, string) (*sql.Stmt, error) {
	return nil, h.wait()
}

func (h *heldWrites) QueryContext(context.Context, string, ...any) (*sql.Rows, error) {
	return nil, h.wait()
}

func (h *heldWrites) QueryRowContext(context.Context, string, ...any) *sql.Row {
	panic("not used by the progress writer")
}

// TestProgressFinishedWaitsForTheWriteOfItsLastReport: a handler's last
// report taken by a periodic write that is still under way when the
// handler returns. The job's outcome, which deletes its row, must wait for
// that write, or the write finds no row and drops the last report, leaving
// an earlier one (TestProgressCoalesced failed so now and then under load).
func TestProgressFinishedWaitsForTheWriteOfItsLastReport(t *testing.T) {
	t.Parallel()
	db := &heldWrites{started: make(chan struct{}), release: make(chan struct{})}
	p := newProgressWriter(dbgen.New(), db, sqlname.Names{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()

	p.report(1, 1, "done")
	flushed := make(chan struct{})
	go func() {
		defer close(flushed)
		p.flush(ctx, nil) // the periodic write, with job 1's last report
	}()
	<-db.started

	returned := make(chan struct{})
	go func() {
		defer close(returned)
		p.finished(ctx, 1) // job 1's handler has returned
	}()
	select {
	case <-returned:
		t.Fatal("finished returned while the write of the job's last report was under way")
	case <-time.After(100 * time.Millisecond):
	}
	close(db.release)
	<-flushed
	<-returned

	// A job whose reports are all written, or that made none, does not wait.
	db.release = make(chan struct{})
	p.report(2, 0.5, "other")
	flushed = make(chan struct{})
	go func() {
		defer close(flushed)
		p.flush(ctx, nil)
	}()
	<-db.started
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.finished(ctx, 1)
		p.finished(ctx, 3)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Error("finished of jobs with nothing under way waited for another job's write")
	}
	close(db.release)
	<-flushed
}
