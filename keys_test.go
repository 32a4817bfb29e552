package pgq_test

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
	"github.com/pressly/goose/v3"
)

// TestFairnessKeyShare: with 2,000 jobs of tenant A queued first, the
// single job of tenant B enqueued after them starts within the first two
// claims of 10 (old code, or without keys: after all of A's); each
// claim takes both tenants' jobs while both have some.
func TestFairnessKeyShare(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		jobs := make([]pgq.NewJob, 2000)
		for i := range jobs {
			jobs[i] = pgq.NewJob{Entrypoint: "fair", FairnessKey: "tenant-a", Payload: []byte("a")}
		}
		if _, err := q.EnqueueBatch(ctx, jobs); err != nil {
			t.Fatal(err)
		}
		if _, err := q.Enqueue(ctx, "fair", []byte("b"), pgq.WithFairnessKey("tenant-b")); err != nil {
			t.Fatal(err)
		}
		var started atomic.Int64
		var bAt atomic.Int64
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		if err := qm.Entrypoint("fair", func(_ context.Context, j *pgq.Job) error {
			n := started.Add(1)
			if j.FairnessKey == "tenant-b" {
				bAt.Store(n)
			}
			if want := "tenant-" + string(j.Payload); j.FairnessKey != want {
				return fmt.Errorf("job %d: fairness key %q, want %q", j.ID, j.FairnessKey, want)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		drain(t, ctx, qm, pgq.WithBatchSize(10), pgq.WithMaxConcurrentTasks(10))
		if got := started.Load(); got != 2001 {
			t.Fatalf("%d jobs started, want 2001", got)
		}
		if b := bAt.Load(); b < 1 || b > 20 {
			t.Fatalf("tenant B's job started as number %d of 2001, want within the first two claims of 10", b)
		}
		if n := scalar[int](t, db, `SELECT count(*) FROM pgqueuer_log WHERE status = 'exception'`); n != 0 {
			t.Fatalf("%d jobs failed", n)
		}
	})
}

// TestKeyConcurrencyLimit: with WithKeyConcurrencyLimit(2), two workers
// never run more than two jobs of one fairness key at once, while other
// keys' jobs run beside them.
func TestKeyConcurrencyLimit(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		var jobs []pgq.NewJob
		for i := range 60 {
			jobs = append(jobs, pgq.NewJob{Entrypoint: "lim", FairnessKey: fmt.Sprintf("k%d", i%3)})
		}
		if _, err := q.EnqueueBatch(ctx, jobs); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		running, most := map[string]int{}, map[string]int{}
		handler := func(_ context.Context, j *pgq.Job) error {
			mu.Lock()
			running[j.FairnessKey]++
			most[j.FairnessKey] = max(most[j.FairnessKey], running[j.FairnessKey])
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
			mu.Lock()
			running[j.FairnessKey]--
			mu.Unlock()
			return nil
		}
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		for range 2 {
			qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
			if err := qm.Entrypoint("lim", handler, pgq.WithKeyConcurrencyLimit(2)); err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- qm.Run(ctx, pgq.WithMode(pgq.ModeDrain), pgq.WithMaxConcurrentTasks(10))
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if n := scalar[int](t, db, `SELECT count(*) FROM pgqueuer`); n != 0 {
			t.Fatalf("%d jobs left", n)
		}
		for k, n := range most {
			if n > 2 {
				t.Errorf("key %s: %d jobs ran at once, want at most 2", k, n)
			}
		}
		if len(most) != 3 {
			t.Errorf("keys run: %v", most)
		}
	})
}

// TestKeyLimitMarks: only the running keyed jobs of an entrypoint with a
// key limit are marked for the limit's count (migration 11), so the fair
// claim of other entrypoints writes no entry in its index. The other
// entrypoint's jobs start marked, as a job retried after its entrypoint's
// limit was dropped would be: their claim clears the mark. Each handler
// reads its own row through the worker's pool while it runs.
func TestKeyLimitMarks(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		var jobs []pgq.NewJob
		for i := range 40 {
			jobs = append(jobs,
				pgq.NewJob{Entrypoint: "limited", FairnessKey: fmt.Sprintf("k%d", i%4)},
				pgq.NewJob{Entrypoint: "free", FairnessKey: fmt.Sprintf("k%d", i%4)})
		}
		if _, err := q.EnqueueBatch(ctx, jobs); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, "UPDATE pgqueuer SET fair_limited = true WHERE entrypoint = 'free'"); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		marks := map[string]map[bool]int{"limited": {}, "free": {}}
		record := func(ctx context.Context, j *pgq.Job) error {
			var marked sql.NullBool
			if err := db.QueryRowContext(ctx, "SELECT fair_limited FROM pgqueuer WHERE id = $1", int64(j.ID)).Scan(&marked); err != nil {
				return err
			}
			mu.Lock()
			marks[j.Entrypoint][marked.Valid && marked.Bool]++
			mu.Unlock()
			return nil
		}
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		if err := qm.Entrypoint("limited", record, pgq.WithKeyConcurrencyLimit(3)); err != nil {
			t.Fatal(err)
		}
		if err := qm.Entrypoint("free", record); err != nil {
			t.Fatal(err)
		}
		if err := qm.Run(ctx, pgq.WithMode(pgq.ModeDrain)); err != nil {
			t.Fatal(err)
		}
		if got := marks["limited"]; got[true] != 40 || got[false] != 0 {
			t.Errorf("limited entrypoint: %d jobs marked, %d not; want all 40 marked", got[true], got[false])
		}
		if got := marks["free"]; got[false] != 40 || got[true] != 0 {
			t.Errorf("entrypoint without a key limit: %d jobs marked, %d not; want none of 40 marked", got[true], got[false])
		}
	})
}

// TestSerialKeyOrder: four workers run 100 keys x 100 jobs, enqueued in a
// shuffled order of keys; every key's jobs start in enqueue order, each
// exactly once, and no two of one key overlap in time.
func TestSerialKeyOrder(t *testing.T) {
	const keys, perKey = 100, 100
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		q := pgq.NewQueries(db)
		order := make([]int, 0, keys*perKey)
		for k := range keys {
			for range perKey {
				order = append(order, k)
			}
		}
		rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		next := make([]int, keys)
		var jobs []pgq.NewJob
		for _, k := range order {
			jobs = append(jobs, pgq.NewJob{Entrypoint: "serial", SerialKey: fmt.Sprintf("account-%d", k),
				Payload: binary.BigEndian.AppendUint32(nil, uint32(next[k]))})
			next[k]++
		}
		for len(jobs) > 0 {
			n := min(len(jobs), 1000)
			if _, err := q.EnqueueBatch(ctx, jobs[:n]); err != nil {
				t.Fatal(err)
			}
			jobs = jobs[n:]
		}
		type run struct {
			seq        int
			start, end time.Time
		}
		var mu sync.Mutex
		runs := map[string][]run{}
		active := map[string]bool{}
		var overlaps atomic.Int64
		handler := func(_ context.Context, j *pgq.Job) error {
			mu.Lock()
			if active[j.SerialKey] {
				overlaps.Add(1)
			}
			active[j.SerialKey] = true
			r := run{seq: int(binary.BigEndian.Uint32(j.Payload)), start: time.Now()}
			mu.Unlock()
			if rand.IntN(4) == 0 {
				time.Sleep(time.Millisecond)
			}
			mu.Lock()
			active[j.SerialKey] = false
			r.end = time.Now()
			runs[j.SerialKey] = append(runs[j.SerialKey], r)
			mu.Unlock()
			return nil
		}
		for range 4 {
			qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
			if err := qm.Entrypoint("serial", handler); err != nil {
				t.Fatal(err)
			}
			runWorker(t, ctx, qm, pgq.WithMaxConcurrentTasks(16), pgq.WithBatchSize(16))
		}
		for scalar[int](t, db, `SELECT count(*) FROM pgqueuer`) > 0 {
			if ctx.Err() != nil {
				t.Fatalf("jobs left: %d", scalar[int](t, db, `SELECT count(*) FROM pgqueuer`))
			}
			time.Sleep(50 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		if n := overlaps.Load(); n > 0 {
			t.Errorf("%d jobs started while another of their key ran", n)
		}
		if len(runs) != keys {
			t.Fatalf("%d keys ran, want %d", len(runs), keys)
		}
		for k, rs := range runs {
			if len(rs) != perKey {
				t.Errorf("key %s: %d runs, want %d", k, len(rs), perKey)
				continue
			}
			for i, r := range rs {
				if r.seq != i {
					t.Errorf("key %s: run %d was job %d of the key, want enqueue order", k, i, r.seq)
					break
				}
				if i > 0 && r.start.Before(rs[i-1].end) {
					t.Errorf("key %s: job %d started before job %d ended", k, i, i-1)
					break
				}
			}
		}
	})
}

// TestSerialKeyHeld: a held (failed) job blocks its key until it is
// requeued, unless the entrypoint has WithSerialSkipHeld; a later job of
// another key runs meanwhile.
func TestSerialKeyHeld(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		for _, skip := range []bool{false, true} {
			ep := fmt.Sprintf("held-%v", skip)
			var ran sync.Map
			opts := []pgq.EntrypointOption{pgq.OnFailure(pgq.Hold)}
			if skip {
				opts = append(opts, pgq.WithSerialSkipHeld())
			}
			qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
			if err := qm.Entrypoint(ep, func(_ context.Context, j *pgq.Job) error {
				if _, again := ran.LoadOrStore(string(j.Payload), true); string(j.Payload) == "first" && !again {
					return errors.New("first fails")
				}
				return nil
			}, opts...); err != nil {
				t.Fatal(err)
			}
			first, err := q.Enqueue(ctx, ep, []byte("first"), pgq.WithSerialKey("k"))
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{"second", "other"} {
				key := "k"
				if p == "other" {
					key = "k2"
				}
				if _, err := q.Enqueue(ctx, ep, []byte(p), pgq.WithSerialKey(key)); err != nil {
					t.Fatal(err)
				}
			}
			drain(t, ctx, qm)
			_, second := ran.Load("second")
			_, other := ran.Load("other")
			if !other || second != skip {
				t.Fatalf("skip held %v: second ran %v, other ran %v", skip, second, other)
			}
			if !skip {
				if _, err := q.RequeueJobs(ctx, pgq.JobFilter{Entrypoints: []string{ep}, Statuses: []pgq.Status{pgq.StatusFailed}}); err != nil {
					t.Fatal(err)
				}
				drain(t, ctx, qm)
				if _, second = ran.Load("second"); !second {
					t.Fatalf("second did not run after the held job %d was requeued", first)
				}
			}
		}
	})
}

// TestKeysBadInput: empty, long, invalid and doubled keys are refused
// with an error that names the value; nothing is enqueued.
func TestKeysBadInput(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		long := strings.Repeat("x", pgq.MaxKeyLength+1)
		cases := []struct {
			name string
			opts []pgq.EnqueueOption
			want string
		}{
			{"empty fairness", []pgq.EnqueueOption{pgq.WithFairnessKey("")}, `WithFairnessKey("")`},
			{"empty serial", []pgq.EnqueueOption{pgq.WithSerialKey("")}, `WithSerialKey("")`},
			{"long fairness", []pgq.EnqueueOption{pgq.WithFairnessKey(long)}, "201 bytes, longer than MaxKeyLength (200)"},
			{"long serial", []pgq.EnqueueOption{pgq.WithSerialKey(long)}, `serial key "xxxxxxxx`},
			{"both", []pgq.EnqueueOption{pgq.WithFairnessKey("t"), pgq.WithSerialKey("s")}, `fairness key "t" and serial key "s"`},
			{"nul", []pgq.EnqueueOption{pgq.WithSerialKey("a\x00b")}, `"a\x00b" contains a NUL byte`},
			{"utf8", []pgq.EnqueueOption{pgq.WithFairnessKey("a\xffb")}, `"a\xffb" is not valid UTF-8`},
		}
		for _, c := range cases {
			_, err := q.Enqueue(ctx, "bad", nil, c.opts...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: err = %v, want one containing %s", c.name, err, c.want)
			}
		}
		if _, err := q.Enqueue(ctx, "bad", nil, pgq.WithFairnessKey(long[:pgq.MaxKeyLength])); err != nil {
			t.Errorf("a key of MaxKeyLength bytes: %v", err)
		}
		qm := pgq.NewQueueManager(db)
		nop := func(context.Context, *pgq.Job) error { return nil }
		if err := qm.Entrypoint("x", nop, pgq.WithKeyConcurrencyLimit(0)); err == nil || !strings.Contains(err.Error(), "got 0") {
			t.Errorf("WithKeyConcurrencyLimit(0): %v", err)
		}
		if n := scalar[int](t, db, `SELECT count(*) FROM pgqueuer`); n != 1 {
			t.Errorf("%d jobs enqueued, want the one good one", n)
		}
	})
}

// TestSerialKeyWorkerCrash: a worker process runs the first job of a
// serial key and is SIGKILLed; the key's second job does not start while
// the first is held by the dead worker (not in that process, not in
// another), and after the heartbeat rescue the first runs again, then
// the second, in order.
func TestSerialKeyWorkerCrash(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		if _, err := db.Exec("CREATE TABLE crash_marks (job_id bigint, pid int)"); err != nil {
			t.Fatal(err)
		}
		cmd := startWorker(t, driverName(db), dsn)
		q := pgq.NewQueries(db)
		first, err := q.Enqueue(ctx, "crash", []byte("first"), pgq.WithSerialKey("acct"))
		if err != nil {
			t.Fatal(err)
		}
		second, err := q.Enqueue(ctx, "crash", []byte("second"), pgq.WithSerialKey("acct"))
		if err != nil {
			t.Fatal(err)
		}
		waitMark(t, db, first, cmd.Process.Pid)
		time.Sleep(500 * time.Millisecond) // the worker has free slots and claims on
		if n := scalar[int](t, db, "SELECT count(*) FROM crash_marks WHERE job_id = $1", int64(second)); n != 0 {
			t.Fatalf("the second job of the key started while the first ran")
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		var mu sync.Mutex
		var order []string
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("crash", func(ctx context.Context, j *pgq.Job) error {
			mu.Lock()
			order = append(order, string(j.Payload))
			mu.Unlock()
			return nil
		})
		runCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			done <- qm.Run(runCtx, pgq.WithHeartbeatTimeout(time.Second), pgq.WithDequeueTimeout(100*time.Millisecond))
		}()
		for scalar[int](t, db, "SELECT count(*) FROM pgqueuer") > 0 {
			if runCtx.Err() != nil {
				t.Fatalf("jobs not rescued and run: %d left", scalar[int](t, db, "SELECT count(*) FROM pgqueuer"))
			}
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if strings.Join(order, ",") != "first,second" {
			t.Fatalf("after the rescue the jobs ran as %v, want first then second", order)
		}
	})
}

// TestFairLimitedMigration: migration 11 marks the keyed jobs running at
// the upgrade (so that none escapes a key limit while it finishes), not
// the others, and moves the limit's index; down and up again restore each
// side's index.
func TestFairLimitedMigration(t *testing.T) {
	eachBareProvider(t, func(t *testing.T, ctx context.Context, db *sql.DB, p *goose.Provider) {
		if _, err := p.UpTo(ctx, 10); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO pgqueuer (priority, entrypoint, status, fairness_key)
			VALUES (0, 'e', 'picked', 'k'), (0, 'e', 'picked', NULL), (0, 'e', 'queued', 'k')`); err != nil {
			t.Fatal(err)
		}
		if _, err := p.UpTo(ctx, 11); err != nil {
			t.Fatal(err)
		}
		marked := `SELECT coalesce(string_agg(status || ':' || coalesce(fairness_key, '-'), ',' ORDER BY id), '')
			FROM pgqueuer WHERE fair_limited`
		if got := scalar[string](t, db, marked); got != "picked:k" {
			t.Errorf("marked after the upgrade: %q, want only the running keyed job", got)
		}
		index := func(name string) bool {
			return scalar[bool](t, db, "SELECT to_regclass($1) IS NOT NULL", name)
		}
		if !index("pgqueuer_pgq_fair_limited_idx") || index("pgqueuer_pgq_fair_picked_idx") {
			t.Errorf("after version 11: fair_limited_idx %v, fair_picked_idx %v",
				index("pgqueuer_pgq_fair_limited_idx"), index("pgqueuer_pgq_fair_picked_idx"))
		}
		if err := pgq.Verify(ctx, db); err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if _, err := p.DownTo(ctx, 10); err != nil {
			t.Fatal(err)
		}
		if index("pgqueuer_pgq_fair_limited_idx") || !index("pgqueuer_pgq_fair_picked_idx") {
			t.Errorf("after down to 10: fair_limited_idx %v, fair_picked_idx %v",
				index("pgqueuer_pgq_fair_limited_idx"), index("pgqueuer_pgq_fair_picked_idx"))
		}
		if _, err := p.Up(ctx); err != nil {
			t.Fatal(err)
		}
		if err := pgq.Verify(ctx, db); err != nil {
			t.Fatalf("Verify after down and up: %v", err)
		}
	})
}
