package pgq_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/internal/dsn"
	"github.com/pgq-dev/pgq/internal/syncbuf"
	"github.com/pgq-dev/pgq/pgqtest"
)

// Tests of the limits that protect the server: a flood of notifications,
// statements that block on someone else's lock or hit statement_timeout,
// and the largest payload.

// floodNotifications sends n distinct job-table insert events on the
// default channel in one transaction, as n enqueues by n producers would,
// delivered together when it commits.
func floodNotifications(t *testing.T, ctx context.Context, db *sql.DB, n int) {
	t.Helper()
	_, err := db.ExecContext(ctx, `SELECT count(pg_notify('ch_pgqueuer', json_build_object(
		'channel', 'ch_pgqueuer', 'operation', 'insert', 'sent_at', now(),
		'table', 'pgqueuer', 'type', 'table_changed_event', 'n', i)::text))
		FROM generate_series(1, $1::int) AS i`, n)
	if err != nil {
		t.Fatal(err)
	}
}

// TestNotifyFloodBoundsClaims: 100,000 notifications in one second (each
// an enqueue elsewhere, of an entrypoint these workers do not run) must
// not make idle workers claim 100,000 times: wake-ups that come while the
// last claim found nothing are coalesced, so an idle worker claims at most
// about 1/wakeGap times a second however many notifications arrive. Then,
// 100,000 real enqueues in 100 batches from 4 producers, with a job of
// theirs among them: it still runs.
func TestNotifyFloodBoundsClaims(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		// Not testCtx's minute: the 100,000 enqueues alone took over 60 s
		// on both drivers in a full make test on a loaded 2-core machine.
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		const workers = 3
		ran := make(chan pgq.JobID, 16)
		var qms []*pgq.QueueManager
		for range workers {
			qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
			_ = qm.Entrypoint("idle", func(ctx context.Context, j *pgq.Job) error { ran <- j.ID; return nil })
			runWorker(t, ctx, qm, pgq.WithDequeueTimeout(time.Minute))
			qms = append(qms, qm)
		}
		eventually(t, "workers listening", func() bool {
			for _, qm := range qms {
				if !qm.Listening() {
					return false
				}
			}
			return true
		})
		claims := func() (n int64) {
			for _, qm := range qms {
				n += pgq.ClaimCount(qm)
			}
			return n
		}
		// Synthetic: 100,000 notifications in one commit.
		before := claims()
		begin := time.Now()
		floodNotifications(t, ctx, db, 100_000)
		sent := time.Since(begin)
		time.Sleep(3 * time.Second) // the listeners read them all meanwhile
		flood := claims() - before
		window := time.Since(begin)
		t.Logf("100,000 notifications sent in %v: %d claims by %d idle workers in %v (%.0f claims/s per worker)",
			sent.Round(time.Millisecond), flood, workers, window.Round(time.Millisecond),
			float64(flood)/window.Seconds()/workers)

		// Real: 100,000 enqueues in batches of 1000 from 4 producers, one
		// of them a job of the workers.
		q := pgq.NewQueries(db)
		before = claims()
		begin = time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for p := range 4 {
			wg.Go(func() {
				for b := range 25 {
					jobs := make([]pgq.NewJob, 1000)
					for i := range jobs {
						jobs[i].Entrypoint = "elsewhere"
					}
					if p == 0 && b == 12 {
						jobs[500].Entrypoint = "idle"
					}
					if _, err := q.EnqueueBatch(ctx, jobs); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		enqueued := time.Since(begin)
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		receive(t, ran, 10*time.Second, "the workers' job among the enqueues")
		time.Sleep(time.Second)
		real := claims() - before
		window = time.Since(begin)
		t.Logf("100,000 enqueues (100 batches) in %v: %d claims by %d workers in %v",
			enqueued.Round(time.Millisecond), real, workers, window.Round(time.Millisecond))

		// At most 1/wakeGap claims a second per worker, with slack for
		// the polls and the claim of the one job.
		limit := int64(float64(workers)*window.Seconds()/pgq.WakeGap.Seconds()) + 3*workers
		if flood > int64(float64(workers)*4/pgq.WakeGap.Seconds()) {
			t.Errorf("%d claims after a flood of 100,000 notifications; want at most %d per worker per second",
				flood, int(1/pgq.WakeGap.Seconds()))
		}
		if real > limit {
			t.Errorf("%d claims during 100,000 enqueues; want at most %d", real, limit)
		}
	})
}

// dsnWith returns connString with a run-time parameter added (both
// drivers send unknown keys to the server as settings).
func dsnWith(t *testing.T, connString, key, value string) string {
	t.Helper()
	if dsn.IsURL(connString) {
		u, err := url.Parse(connString)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String()
	}
	pairs, err := dsn.ParseKeywordValue(connString)
	if err != nil {
		t.Fatal(err)
	}
	return dsn.Join(append(pairs, dsn.Pair{Key: key, Value: value}))
}

// TestBlockedStatementsBackOff: while another connection holds the job
// table locked, every statement of a worker whose connections have a small
// statement_timeout fails after it; the worker must keep running, back off
// (notifications arriving meanwhile must not make it retry at once), and
// once the lock is gone write the outcome of the job it ran and run the
// next: the job intact, run once, logged once.
func TestBlockedStatementsBackOff(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		driver := "postgres"
		if strings.Contains(fmt.Sprintf("%T", db.Driver()), "stdlib") {
			driver = "pgx"
		}
		timeoutDSN := dsnWith(t, dsn, "statement_timeout", "100")
		wdb, err := sql.Open(driver, timeoutDSN)
		if err != nil {
			t.Fatal(err)
		}
		defer wdb.Close()
		if got := scalar[string](t, wdb, "SHOW statement_timeout"); got != "100ms" {
			t.Fatalf("statement_timeout %q on the worker's connections", got)
		}
		var logs syncbuf.Buffer
		qm := pgq.NewQueueManager(wdb, pgq.WithListenDSN(timeoutDSN),
			pgq.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		starts, end := make(chan *heldAttempt, 4), make(chan struct{})
		var runs atomic.Int32
		_ = qm.Entrypoint("held", func(ctx context.Context, j *pgq.Job) error {
			runs.Add(1)
			return blockingHandler(starts, end)(ctx, j)
		})
		ran := make(chan pgq.JobID, 1)
		_ = qm.Entrypoint("next", func(ctx context.Context, j *pgq.Job) error { ran <- j.ID; return nil })
		stop := startRun(t, ctx, qm, pgq.WithDequeueTimeout(100*time.Millisecond), pgq.WithHeartbeatTimeout(3*time.Second))
		t.Cleanup(func() { close(end) })

		q := pgq.NewQueries(db)
		a, err := q.Enqueue(ctx, "held", nil)
		if err != nil {
			t.Fatal(err)
		}
		first := receive(t, starts, 10*time.Second, "the held job to start")

		// Someone else locks the job table for 3 s.
		locker := lockedTx(t, ctx, db, "LOCK TABLE pgqueuer IN ACCESS EXCLUSIVE MODE")
		before := pgq.ClaimCount(qm)
		close(first.release) // its outcome write now waits for the lock
		locked := time.Now()
		// Notifications keep coming meanwhile (every 10 ms).
		for time.Since(locked) < 3*time.Second {
			floodNotifications(t, ctx, db, 1)
			time.Sleep(10 * time.Millisecond)
		}
		claims := pgq.ClaimCount(qm) - before
		if err := locker.Commit(); err != nil {
			t.Fatal(err)
		}
		held := time.Since(locked)

		waitFinished(t, db, a)
		b, err := q.Enqueue(ctx, "next", nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := receive(t, ran, 10*time.Second, "the next job"); got != b {
			t.Fatalf("ran %d, want %d", got, b)
		}
		stop()
		out := logs.String()
		claimFails := strings.Count(out, "claiming jobs failed")
		writeFails := strings.Count(out, "writing job outcomes failed")
		t.Logf("table locked for %v with statement_timeout 100ms: %d claims tried (%d failed), %d outcome writes failed",
			held.Round(time.Millisecond), claims, claimFails, writeFails)
		if !strings.Contains(out, "statement timeout") {
			t.Errorf("no statement timeout seen: the lock did not block the worker?\n%s", out)
		}
		// Backing off from 50 ms, doubling: about 7 tries in 3 s (without
		// it, one every statement_timeout or notification: 30).
		if claims > 12 {
			t.Errorf("%d claims tried in %v while the table was locked; want a backoff (at most 12)", claims, held)
		}
		if writeFails > 12 {
			t.Errorf("%d outcome writes tried while the table was locked; want a backoff (at most 12)", writeFails)
		}
		if got := logOf(t, db, a); got != "queued picked successful" {
			t.Errorf("job %d: log %q, want %q", a, got, "queued picked successful")
		}
		if n := runs.Load(); n != 1 {
			t.Errorf("the held job ran %d times", n)
		}
	})
}

// TestCancelManyFitsNotify: cancelling more jobs than one notification
// can name (PostgreSQL refuses NOTIFY payloads of 8000 bytes or more)
// sends several events, and succeeds: before, 2000 ids made the NOTIFY
// fail after the jobs were already deleted.
func TestCancelManyFitsNotify(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		ids, err := q.EnqueueBatch(ctx, make([]pgq.NewJob, 2000))
		if err == nil {
			t.Fatal("jobs without an entrypoint accepted")
		}
		jobs := make([]pgq.NewJob, 2000)
		for i := range jobs {
			jobs[i].Entrypoint = "many"
		}
		if ids, err = q.EnqueueBatch(ctx, jobs); err != nil {
			t.Fatal(err)
		}
		if err := q.MarkJobAsCancelled(ctx, ids); err != nil {
			t.Fatalf("cancel 2000 jobs: %v", err)
		}
		st, err := q.JobStatus(ctx, ids)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if st[id] != pgq.StatusCanceled {
				t.Fatalf("job %d: %s", id, st[id])
			}
		}
	})
}

// TestMaxPayloadRoundTrip: a payload of MaxPayloadSize (256 MiB) is
// enqueued, claimed and handed to its handler byte for byte, on each driver
// in turn (one such payload on its way at a time, which bounds memory); one
// byte more is refused before anything is sent, with an error naming both
// sizes. It takes minutes and about 2 GiB of memory in the test process and
// 1.5 GiB in a server process (figures in docs/limits.md), so it runs only
// when PGQ_TEST_MAXPAYLOAD=1: `make maxpayload`, part of `make test`, runs
// it on its own, after the other tests.
func TestMaxPayloadRoundTrip(t *testing.T) {
	if os.Getenv("PGQ_TEST_MAXPAYLOAD") != "1" {
		t.Skip("a 256 MiB round trip per driver (minutes, about 2 GiB): set PGQ_TEST_MAXPAYLOAD=1 or run make maxpayload")
	}
	payload := make([]byte, pgq.MaxPayloadSize+1)
	_, _ = rand.NewChaCha8([32]byte{'p', 'g', 'q'}).Read(payload) // incompressible
	want := sha256.Sum256(payload[:pgq.MaxPayloadSize])
	for _, driver := range pgqtest.Drivers() {
		t.Run(driver, func(t *testing.T) {
			db, _ := pgqtest.NewDB(t, driver)
			ctx, cancel := context.WithTimeout(context.Background(), maxPayloadDeadline)
			defer cancel()
			q := pgq.NewQueries(db)

			_, err := q.Enqueue(ctx, "big", payload)
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("payload of %d bytes is larger than MaxPayloadSize (%d)", len(payload), pgq.MaxPayloadSize)) {
				t.Fatalf("enqueue of %d bytes: err %v; want one naming the size and the limit", len(payload), err)
			}
			var n int
			if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pgqueuer`).Scan(&n); err != nil || n != 0 {
				t.Fatalf("after the refused enqueue: %d jobs (%v)", n, err)
			}

			mem := sampleMemory()
			begin := time.Now()
			id, err := q.Enqueue(ctx, "big", payload[:pgq.MaxPayloadSize])
			if err != nil {
				_, _, _ = mem.stop()
				t.Fatalf("enqueue of MaxPayloadSize bytes: %v", err)
			}
			enqueued := time.Since(begin)
			type digest struct {
				n   int
				sum [sha256.Size]byte
			}
			got := make(chan digest, 1)
			qm := pgq.NewQueueManager(db)
			if err := qm.Entrypoint("big", func(ctx context.Context, j *pgq.Job) error {
				got <- digest{len(j.Payload), sha256.Sum256(j.Payload)}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			runWorker(t, ctx, qm)
			var d digest
			select {
			case d = <-got:
			case <-ctx.Done():
				_, _, _ = mem.stop()
				t.Fatalf("the 256 MiB job did not reach its handler within %v (enqueued in %v)", maxPayloadDeadline, enqueued)
			}
			handled := time.Since(begin)
			if d.n != pgq.MaxPayloadSize || d.sum != want {
				t.Errorf("the handler got %d bytes, sha256 %x; want %d bytes, sha256 %x", d.n, d.sum, pgq.MaxPayloadSize, want)
			}
			for {
				st, err := q.JobStatus(ctx, []pgq.JobID{id})
				if err != nil {
					t.Fatal(err)
				}
				if st[id] == pgq.StatusSuccessful {
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("job %d: %q, not successful, within %v", id, st[id], maxPayloadDeadline)
				}
				time.Sleep(10 * time.Millisecond)
			}
			done := time.Since(begin)
			backend := backendPeak(ctx, t, db)
			base, peak, allocs := mem.stop()
			t.Logf("256 MiB payload, %s: enqueued in %v, in the handler after %v, logged successful after %v; "+
				"Go runtime held %d MiB at the start (the payload included), %d MiB at the peak; %d MiB allocated; "+
				"largest server process peak RSS %s",
				driver, enqueued.Round(time.Millisecond), handled.Round(time.Millisecond), done.Round(time.Millisecond),
				base>>20, peak>>20, allocs>>20, backend)
		})
	}
}

// maxPayloadDeadline bounds each driver's 256 MiB round trip in
// TestMaxPayloadRoundTrip (see docs/limits.md for the times measured).
const maxPayloadDeadline = 10 * time.Minute

// memSampler samples the memory the Go runtime holds from the OS.
type memSampler struct {
	base, peak  uint64
	allocs0     uint64
	stopc, done chan struct{}
}

// readMem returns the memory the Go runtime holds from the OS (mapped and
// not released) and the bytes allocated so far.
func readMem() (held, allocs uint64) {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"},
		{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64() - s[1].Value.Uint64(), s[2].Value.Uint64()
}

// sampleMemory returns what the runtime holds after a GC that returns
// what it can to the OS, and starts sampling every 10 ms until stop.
func sampleMemory() *memSampler {
	debug.FreeOSMemory()
	m := &memSampler{stopc: make(chan struct{}), done: make(chan struct{})}
	m.base, m.allocs0 = readMem()
	m.peak = m.base
	go func() {
		defer close(m.done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-m.stopc:
				return
			case <-tick.C:
				if v, _ := readMem(); v > m.peak {
					m.peak = v
				}
			}
		}
	}()
	return m
}

// stop ends the sampling and returns the memory held at the start, the
// peak, and the bytes allocated meanwhile.
func (m *memSampler) stop() (base, peak, allocs uint64) {
	close(m.stopc)
	<-m.done
	_, a := readMem()
	return m.base, m.peak, a - m.allocs0
}

// backendPeak returns the largest peak resident size (VmHWM) among the
// server processes serving db's database, when the server runs on this
// machine and /proc shows them; "unknown" otherwise.
func backendPeak(ctx context.Context, t *testing.T, db *sql.DB) string {
	rows, err := db.QueryContext(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database()`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var peak int64 = -1
	for rows.Next() {
		var pid int
		if err := rows.Scan(&pid); err != nil {
			t.Fatal(err)
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !strings.Contains(string(cmd), "postgres") {
			continue
		}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			if kb, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				var v int64
				if _, err := fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(kb), " kB"), &v); err == nil && v > peak {
					peak = v
				}
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if peak < 0 {
		return "unknown"
	}
	return fmt.Sprintf("%d MiB", peak>>10)
}
