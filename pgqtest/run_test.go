package pgqtest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqtest"
)

// TestRunOneAndDrain: RunOne runs exactly one job (the highest priority)
// and returns its outcome, written; Drain runs the rest and returns theirs.
func TestRunOneAndDrain(t *testing.T) {
	for _, driver := range pgqtest.Drivers() {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			db, dsn := pgqtest.NewDB(t, driver)
			q := pgq.NewQueries(db)
			for i, p := range []string{"a", "bad", "c", "d"} {
				if _, err := q.Enqueue(ctx, "e", []byte(p), pgq.WithPriority(int32(10-i))); err != nil {
					t.Fatal(err)
				}
			}
			big := bytes.Repeat([]byte("x"), 5000)
			if _, err := q.Enqueue(ctx, "other", big); err != nil {
				t.Fatal(err)
			}
			var ran atomic.Int64
			qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
			_ = qm.Entrypoint("e", func(ctx context.Context, j *pgq.Job) error {
				ran.Add(1)
				if string(j.Payload) == "bad" {
					return errors.New("bad payload")
				}
				return nil
			})

			first := pgqtest.RunOne(ctx, t, db, qm)
			if string(first.Job.Payload) != "a" || first.Err != nil || ran.Load() != 1 {
				t.Fatalf("RunOne: %q, %v after %d handler calls; want a, nil after 1", first.Job.Payload, first.Err, ran.Load())
			}
			if st, err := q.JobStatus(ctx, []pgq.JobID{first.Job.ID}); err != nil || st[first.Job.ID] != pgq.StatusSuccessful {
				t.Fatalf("after RunOne the job is %v (%v), want successful, written", st, err)
			}
			second := pgqtest.RunOne(ctx, t, db, qm)
			if string(second.Job.Payload) != "bad" || second.Err == nil || second.Err.Error() != "bad payload" {
				t.Fatalf("second RunOne: %q, %v", second.Job.Payload, second.Err)
			}

			pgqtest.RequireEnqueued(t, db, "e", func(p []byte) bool { return string(p) == "d" })
			if j := pgqtest.RequireEnqueued(t, db, "other", func(p []byte) bool { return bytes.Equal(p, big) }); len(j.Payload) != len(big) {
				t.Fatalf("RequireEnqueued returned a %d-byte payload, want the whole %d", len(j.Payload), len(big))
			}

			out := pgqtest.Drain(t, qm)
			var got []string
			for _, o := range out {
				got = append(got, string(o.Job.Payload))
			}
			slices.Sort(got) // the handlers run concurrently
			if strings.Join(got, ",") != "c,d" {
				t.Fatalf("Drain ran %q, want c,d (the other entrypoint has no handler here)", got)
			}
			if out := pgqtest.Drain(t, qm); len(out) != 0 {
				t.Fatalf("Drain of an empty queue ran %d jobs", len(out))
			}
		})
	}
}

// TestHelpersFail: RequireEnqueued and RunOne fail the test, saying why,
// when there is nothing to find or run.
func TestHelpersFail(t *testing.T) {
	db, dsn := pgqtest.NewDB(t, "pgx")
	ctx := t.Context()
	if _, err := pgq.NewQueries(db).Enqueue(ctx, "e", []byte("x")); err != nil {
		t.Fatal(err)
	}
	qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
	_ = qm.Entrypoint("nothing-here", func(context.Context, *pgq.Job) error { return nil })
	for name, f := range map[string]func(tb testing.TB){
		"matching payload": func(tb testing.TB) {
			pgqtest.RequireEnqueued(tb, db, "e", func(p []byte) bool { return string(p) == "y" })
		},
		"is queued":  func(tb testing.TB) { pgqtest.RequireEnqueued(tb, db, "none", nil) },
		"no job ran": func(tb testing.TB) { pgqtest.RunOne(ctx, tb, db, qm) },
	} {
		ft := &fatalT{TB: t}
		done := make(chan struct{})
		go func() { defer close(done); f(ft) }()
		<-done
		if !strings.Contains(ft.msg, name) {
			t.Errorf("want a failure saying %q, got %q", name, ft.msg)
		}
	}
}

// fatalT records Fatalf and ends its goroutine, as testing.T does.
type fatalT struct {
	testing.TB
	msg string
}

func (f *fatalT) Helper() {}
func (f *fatalT) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
