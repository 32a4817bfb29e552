package pgq_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/dsn"
	"github.com/pgq-dev/pgq/internal/syncbuf"
)

// dsnAs returns connString with its user and password replaced.
func dsnAs(t *testing.T, connString, user, password string) string {
	t.Helper()
	if dsn.IsURL(connString) {
		u, err := url.Parse(connString)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword(user, password)
		q := u.Query()
		q.Del("user")
		q.Del("password")
		u.RawQuery = q.Encode()
		return u.String()
	}
	pairs, err := dsn.ParseKeywordValue(connString)
	if err != nil {
		t.Fatal(err)
	}
	kept := pairs[:0]
	for _, p := range pairs {
		if p.Key != "user" && p.Key != "password" {
			kept = append(kept, p)
		}
	}
	return dsn.Join(append(kept, dsn.Pair{Key: "user", Value: user}, dsn.Pair{Key: "password", Value: password}))
}

// newRole creates a login role with only the grants of GrantsSQL for kind
// and returns a pool connected as it, with its DSN. The role is dropped
// when the test ends.
func newRole(t *testing.T, ctx context.Context, owner *sql.DB, ownerDSN, driver string, kind pgq.Role, naming []pgq.SchemaOption) (*sql.DB, string) {
	t.Helper()
	name := fmt.Sprintf("pgq_%s_%s", kind, strings.ReplaceAll(uuid.NewString()[:8], "-", ""))
	const password = "pw-of-a-test-role"
	if _, err := owner.ExecContext(ctx, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", name, password)); err != nil {
		t.Fatal(err)
	}
	// Registered before the pool's Close, so run after it.
	t.Cleanup(func() {
		ctx := context.Background()
		for _, stmt := range []string{"DROP OWNED BY " + name, "DROP ROLE " + name} {
			if _, err := owner.ExecContext(ctx, stmt); err != nil {
				t.Errorf("%s: %v", stmt, err)
			}
		}
	})
	grants, err := pgq.GrantsSQL(name, kind, naming...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := owner.ExecContext(ctx, grants); err != nil {
		t.Fatalf("running the %s grants: %v\n%s", kind, err, grants)
	}
	roleDSN := dsnAs(t, ownerDSN, name, password)
	db, err := sql.Open(driver, roleDSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("connect as %s: %v", name, err)
	}
	return db, roleDSN
}

// permissionDenied reports whether err is PostgreSQL's insufficient_privilege.
func permissionDenied(err error) bool {
	return err != nil && strings.Contains(err.Error(), "permission denied")
}

// TestLeastPrivilegeRoles runs a producer, a worker (with a scheduler,
// statistics folding, log retention and CompleteTx) and a watcher each as
// a role with only the grants GrantsSQL gives it, over real connections as
// those roles, with default names and with a prefix and schema; and shows
// that the producer role can neither claim nor delete nor cancel jobs, nor
// read payloads, and the watcher can only read.
func TestLeastPrivilegeRoles(t *testing.T) {
	eachDriver(t, func(t *testing.T, owner *sql.DB, ownerDSN string) {
		for _, named := range []bool{false, true} {
			t.Run(fmt.Sprintf("prefixed=%v", named), func(t *testing.T) {
				ctx := testCtx(t)
				driver := "postgres"
				if strings.Contains(fmt.Sprintf("%T", owner.Driver()), "stdlib") {
					driver = "pgx"
				}
				var schemaOpts []pgq.SchemaOption
				var qopts []pgq.Option
				var mopts []pgq.ManagerOption
				var wopts []pgq.WatcherOption
				var sopts []pgq.SchedulerOption
				job, prefix, schema := "pgqueuer", "", ""
				if named {
					prefix, schema = "app_", "jobs"
					p, s := pgq.WithPrefix(prefix), pgq.WithSchema(schema)
					schemaOpts = []pgq.SchemaOption{p, s}
					qopts, mopts, wopts = []pgq.Option{p, s}, []pgq.ManagerOption{p, s}, []pgq.WatcherOption{p, s}
					sopts = []pgq.SchedulerOption{p, s}
					if err := pgq.Install(ctx, owner, schemaOpts...); err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { _ = pgq.Uninstall(context.Background(), owner, schemaOpts...) })
					job = "jobs.app_pgqueuer"
				}
				// Autovacuum must not analyse the table before the worker
				// finds that it wants it.
				if _, err := owner.ExecContext(ctx, "ALTER TABLE "+job+" SET (autovacuum_enabled = false)"); err != nil {
					t.Fatal(err)
				}
				producerDB, _ := newRole(t, ctx, owner, ownerDSN, driver, pgq.RoleProducer, schemaOpts)
				workerDB, workerDSN := newRole(t, ctx, owner, ownerDSN, driver, pgq.RoleWorker, schemaOpts)
				watcherDB, watcherDSN := newRole(t, ctx, owner, ownerDSN, driver, pgq.RoleWatcher, schemaOpts)

				// The producer enqueues, one by one and in a batch (with a
				// dedupe key, skipping a duplicate), and reads what it may.
				q := pgq.NewQueries(producerDB, qopts...)
				var ids []pgq.JobID
				id, err := q.Enqueue(ctx, "work", []byte("one"), pgq.WithDedupeKey("k1"))
				if err != nil {
					t.Fatalf("producer Enqueue: %v", err)
				}
				ids = append(ids, id)
				batch := make([]pgq.NewJob, 0, 1200)
				for i := range 1200 { // enough changed rows that the worker wants ANALYZE
					batch = append(batch, pgq.NewJob{Entrypoint: "work", Payload: []byte(fmt.Sprint(i))})
				}
				batch = append(batch, pgq.NewJob{Entrypoint: "work", DedupeKey: "k1"}, pgq.NewJob{Entrypoint: "exact"})
				got, err := q.EnqueueBatch(ctx, batch, pgq.WithSkipDuplicates())
				if err != nil {
					t.Fatalf("producer EnqueueBatch: %v", err)
				}
				for _, id := range got {
					if id != 0 {
						ids = append(ids, id)
					}
				}
				if len(ids) != 1202 {
					t.Fatalf("enqueued %d jobs, want 1202 (the duplicate skipped)", len(ids))
				}
				// Jobs with fairness keys, of an entrypoint that only has
				// those: the worker takes them with the fair claim.
				var fair []pgq.NewJob
				for i := range 6 {
					fair = append(fair, pgq.NewJob{Entrypoint: "fair", FairnessKey: fmt.Sprint("tenant-", i%2)})
				}
				got, err = q.EnqueueBatch(ctx, fair)
				if err != nil {
					t.Fatalf("producer EnqueueBatch with fairness keys: %v", err)
				}
				ids = append(ids, got...)
				if _, err := q.QueueSize(ctx); err != nil {
					t.Errorf("producer QueueSize: %v", err)
				}
				if _, err := q.JobStatus(ctx, ids[:3]); err != nil {
					t.Errorf("producer JobStatus: %v", err)
				}

				// What the producer may not do.
				pdb := pgq.QueryDBNamed(producerDB, prefix, schema)
				_, err = dbgen.New().JobsClaim(ctx, pdb, dbgen.JobsClaimParams{
					Entrypoints: []string{"work"}, Caps: []int32{1}, BatchSize: 1,
					QueueManagerID: uuid.NullUUID{UUID: uuid.New(), Valid: true},
				})
				if !permissionDenied(err) {
					t.Errorf("the producer claimed jobs: %v", err)
				}
				if _, err := dbgen.New().JobsCancel(ctx, pdb, []int64{int64(ids[0])}); !permissionDenied(err) {
					t.Errorf("the producer canceled a job: %v", err)
				}
				if err := q.MarkJobAsCancelled(ctx, ids[:1]); !permissionDenied(err) {
					t.Errorf("the producer's MarkJobAsCancelled: %v", err)
				}
				for _, stmt := range []string{
					"DELETE FROM " + job + " WHERE id = $1",
					"UPDATE " + job + " SET status = 'picked' WHERE id = $1",
					"SELECT id FROM " + job + " WHERE id = $1 FOR UPDATE SKIP LOCKED",
					"SELECT payload FROM " + job + " WHERE id = $1",
				} {
					if _, err := producerDB.ExecContext(ctx, stmt, int64(ids[0])); !permissionDenied(err) {
						t.Errorf("producer: %s: %v, want permission denied", stmt, err)
					}
				}
				for _, stmt := range []string{
					"DELETE FROM " + job + " WHERE id = $1",
					"SELECT payload FROM " + job + " WHERE id = $1",
					"INSERT INTO " + job + " (priority, entrypoint, status) VALUES ($1, 'x', 'queued')",
				} {
					if _, err := watcherDB.ExecContext(ctx, stmt, int64(ids[0])); !permissionDenied(err) {
						t.Errorf("watcher: %s: %v, want permission denied", stmt, err)
					}
				}

				// The watcher waits for all of them; the worker runs them.
				w, err := pgq.NewCompletionWatcher(ctx, watcherDB, append(wopts, pgq.WithListenDSN(watcherDSN))...)
				if err != nil {
					t.Fatalf("watcher: %v", err)
				}
				defer w.Close()
				var logs syncbuf.Buffer
				qm := pgq.NewQueueManager(workerDB, append(mopts, pgq.WithListenDSN(workerDSN),
					pgq.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))...)
				_ = qm.Entrypoint("work", func(ctx context.Context, j *pgq.Job) error {
					// Handlers enqueue follow-ups with the worker's role.
					if j.ID == ids[0] {
						_, err := pgq.NewQueries(workerDB, qopts...).Enqueue(ctx, "exact", nil)
						return err
					}
					return nil
				})
				_ = qm.Entrypoint("fair", func(ctx context.Context, j *pgq.Job) error { return nil })
				_ = qm.Entrypoint("exact", func(ctx context.Context, j *pgq.Job) error {
					tx, err := workerDB.BeginTx(ctx, nil)
					if err != nil {
						return err
					}
					defer tx.Rollback()
					if err := pgq.CompleteTx(ctx, tx, j); err != nil {
						return err
					}
					return tx.Commit()
				})
				stop := startRun(t, ctx, qm, pgq.WithStatisticsInterval(50*time.Millisecond), pgq.WithLogRetention(time.Hour),
					pgq.WithUpkeepInterval(50*time.Millisecond))
				st, err := w.WaitForAll(ctx, ids)
				if err != nil {
					t.Fatalf("WaitForAll: %v", err)
				}
				for _, id := range ids {
					if st[id] != pgq.StatusSuccessful {
						t.Fatalf("job %d: %s", id, st[id])
					}
				}
				// The scheduler, as the worker's role.
				ticked := make(chan struct{}, 1)
				sm := pgq.NewSchedulerManager(workerDB, sopts...)
				if err := sm.Schedule("tick", "* * * * * *", func(context.Context, *pgq.Schedule) error {
					select {
					case ticked <- struct{}{}:
					default:
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				smCtx, stopSM := context.WithCancel(ctx)
				smDone := make(chan error, 1)
				go func() { smDone <- sm.Run(smCtx) }()
				receive(t, ticked, 10*time.Second, "a scheduled run as the worker's role")
				stopSM()
				if err := <-smDone; err != nil {
					t.Errorf("scheduler: %v", err)
				}
				// Statistics folded by the worker's role.
				eventually(t, "statistics folded", func() bool {
					return scalar[int](t, owner, "SELECT count(*) FROM "+strings.Replace(job, "pgqueuer", "pgqueuer_statistics", 1)) > 0
				})
				// The worker's upkeep finds the table wants ANALYZE (1200
				// rows inserted), which its role may not run.
				eventually(t, "the worker to say its role may not analyse", func() bool {
					return strings.Contains(logs.String(), "may not run")
				})
				time.Sleep(200 * time.Millisecond) // more upkeep rounds
				stop()
				out := logs.String()
				for _, l := range strings.Split(out, "\n") {
					if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
						t.Errorf("worker as its role: %s", l)
					}
				}
				if n := strings.Count(out, "may not run"); n != 1 {
					t.Errorf("the worker said %d times that its role may not vacuum or analyse, want once:\n%s", n, out)
				}
			})
		}
	})
}

// TestGrantsSQL checks the statements GrantsSQL prints: quoted names,
// bad input refused with errors that name it.
func TestGrantsSQL(t *testing.T) {
	s, err := pgq.GrantsSQL(`Odd"Role`, pgq.RoleProducer, pgq.WithPrefix("app_"), pgq.WithSchema("jobs"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`GRANT USAGE ON SCHEMA jobs TO "Odd""Role";`, `GRANT INSERT ON jobs.app_pgqueuer TO "Odd""Role";`} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %q in\n%s", want, s)
		}
	}
	if strings.Contains(s, "DELETE") || strings.Contains(s, "UPDATE") {
		t.Errorf("producer grants allow changes:\n%s", s)
	}
	for _, tc := range []struct {
		role string
		kind pgq.Role
		want string
	}{
		{"", pgq.RoleWorker, "empty"},
		{"PUBLIC", pgq.RoleWorker, `"PUBLIC"`},
		{"r", pgq.Role(9), "9"},
	} {
		if _, err := pgq.GrantsSQL(tc.role, tc.kind); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("GrantsSQL(%q, %v): %v, want an error naming %s", tc.role, tc.kind, err, tc.want)
		}
	}
	if _, err := pgq.GrantsSQL("r", pgq.RoleAdmin, pgq.WithSchema("x;drop")); err == nil {
		t.Error("a bad schema name was accepted")
	}
	if _, err := pgq.ParseRole("owner"); err == nil || !strings.Contains(err.Error(), `"owner"`) {
		t.Errorf("ParseRole(owner): %v", err)
	}
	for _, k := range []pgq.Role{pgq.RoleProducer, pgq.RoleWorker, pgq.RoleWatcher, pgq.RoleAdmin} {
		if r, err := pgq.ParseRole(k.String()); err != nil || r != k {
			t.Errorf("ParseRole(%q) = %v, %v", k, r, err)
		}
	}
}
