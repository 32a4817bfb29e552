package pgq_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
)

// Activity counts the outcomes of the window in its buckets, whether or not
// they were folded into the statistics table yet; ListenEvents hands over
// the channel's events.
func TestActivityAndListenEvents(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)

		events := make(chan pgq.Event, 100)
		connected := make(chan struct{}, 10)
		lctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- pgq.ListenEvents(lctx, db, pgq.EventCallbacks{
				Event: func(ev pgq.Event, ok bool, payload string) {
					if ok {
						select {
						case events <- ev:
						default:
						}
					}
				},
				Connected: func() { connected <- struct{}{} },
			}, pgq.WithListenDSN(dsn))
		}()
		select {
		case <-connected:
		case <-time.After(10 * time.Second):
			t.Fatal("ListenEvents did not connect")
		}

		jobs := make([]pgq.NewJob, 10)
		for i := range jobs {
			jobs[i] = pgq.NewJob{Entrypoint: "act", Payload: []byte{byte(i)}}
		}
		if _, err := q.EnqueueBatch(ctx, jobs); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-events:
			if ev.Type != pgq.EventTableChanged {
				t.Errorf("first event %+v, want a table_changed_event", ev)
			}
		case <-time.After(5 * time.Second):
			t.Error("no event after an enqueue")
		}
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		if err := qm.Entrypoint("act", func(ctx context.Context, job *pgq.Job) error {
			if job.Payload[0] < 3 {
				return errors.New("boom")
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		drain(t, ctx, qm)

		buckets, err := q.Activity(ctx, time.Hour, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if len(buckets) != 61 {
			t.Errorf("%d buckets of a minute in an hour, want 61 (the last partial)", len(buckets))
		}
		var finished, errs int64
		for i, b := range buckets {
			finished += b.Finished()
			errs += b.Errors()
			if i > 0 && b.Start.Sub(buckets[i-1].Start) != time.Minute {
				t.Errorf("bucket %d starts %v after the one before", i, b.Start.Sub(buckets[i-1].Start))
			}
		}
		if finished != 10 || errs != 3 {
			t.Errorf("activity: %d finished, %d errors; want 10, 3", finished, errs)
		}
		if last := buckets[len(buckets)-1]; time.Since(last.Start) > 2*time.Minute || time.Since(last.Start) < 0 {
			t.Errorf("last bucket starts at %v, now is %v", last.Start, time.Now())
		}
		if _, err := q.Activity(ctx, time.Hour, 0); err == nil {
			t.Error("Activity with a step of 0: no error")
		}
		stop()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("ListenEvents after its ctx ended: %v", err)
		}
	})
}
