package pgq_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
)

// TestHeartbeatsNotHeldUpByNotifyCommits: a NOTIFY commits behind every
// other notifying commit of the server (one lock, held through each one's
// WAL flush). The listener's echo after it reconnects is a NOTIFY; when it
// went on the heartbeat's connection, a queue of such commits after a
// server restart held the worker's heartbeats up past the heartbeat
// timeout, and another worker ran its running jobs again (chaos run 6).
//
// Here the lock is held for good: on a server of its own,
// synchronous_standby_names names a standby that never comes, and a
// transaction that writes and notifies waits for it at commit, holding the
// NOTIFY lock (the heartbeat neither notifies nor waits: it commits
// asynchronously). The listener's connection is then terminated, so that
// it reconnects and echoes. The running jobs' heartbeats must stay fresh.
func TestHeartbeatsNotHeldUpByNotifyCommits(t *testing.T) {
	ctx := testCtx(t)
	cl := ownServer(t, ctx)
	for _, driver := range []string{"pgx", "postgres"} {
		t.Run(driver, func(t *testing.T) {
			dsn := cl.DSN("postgres")
			db, err := sql.Open(driver, dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			probe, err := sql.Open("pgx", dsn) // the test's own pool
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { probe.Close() })
			_ = pgq.Uninstall(ctx, db)
			if err := pgq.Install(ctx, db); err != nil {
				t.Fatal(err)
			}
			const n = 3
			enqueueN(t, ctx, db, "hold", n)
			release := make(chan struct{})
			qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
			_ = qm.Entrypoint("hold", func(ctx context.Context, j *pgq.Job) error {
				select {
				case <-release:
				case <-ctx.Done():
				}
				return nil
			})
			const timeout = time.Second
			runWorker(t, ctx, qm, pgq.WithHeartbeatTimeout(timeout))
			defer close(release) // before the worker's clean-up
			for deadline := time.Now().Add(10 * time.Second); scalar[int](t, probe,
				"SELECT count(*) FROM pgqueuer WHERE status = 'picked'") < n; {
				if time.Now().After(deadline) {
					t.Fatal("the worker did not claim the jobs")
				}
				time.Sleep(20 * time.Millisecond)
			}

			mustExec(t, probe, "CREATE TABLE IF NOT EXISTS notify_blocker (at timestamptz)")
			mustExec(t, probe, "ALTER SYSTEM SET synchronous_standby_names = 'pgq_test_nobody'")
			mustExec(t, probe, "SELECT pg_reload_conf()")
			time.Sleep(300 * time.Millisecond) // the reload reaches the server processes
			// A notifying commit that writes: it takes the NOTIFY lock and
			// then waits for the standby, holding it.
			blocker, err := probe.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			blocked := make(chan error, 1)
			go func() {
				blocked <- func() error {
					tx, err := blocker.BeginTx(ctx, nil)
					if err != nil {
						return err
					}
					defer tx.Rollback()
					if _, err := tx.Exec("INSERT INTO notify_blocker VALUES (now())"); err != nil {
						return err
					}
					if _, err := tx.Exec("NOTIFY pgq_test_blocker"); err != nil {
						return err
					}
					return tx.Commit()
				}()
			}()
			defer func() {
				mustExec(t, probe, "ALTER SYSTEM RESET synchronous_standby_names")
				mustExec(t, probe, "SELECT pg_reload_conf()")
				if err := <-blocked; err != nil {
					t.Errorf("the blocking commit: %v", err)
				}
				blocker.Close()
			}()
			time.Sleep(200 * time.Millisecond)
			if got := scalar[int](t, probe, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "+
				"WHERE application_name LIKE 'pgq worker %'"); got != 1 {
				t.Fatalf("terminated %d listener connections, want 1", got)
			}

			// Three heartbeat timeouts: the listener reconnects at once and
			// echoes, and the echo's commit waits from then on.
			var oldest float64
			waiting := 0 // echoes seen waiting for the NOTIFY lock, at most
			for end := time.Now().Add(3 * timeout); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
				oldest = max(oldest, scalar[float64](t, probe, "SELECT coalesce(max(extract(epoch FROM now() - heartbeat)), 0)::float8 "+
					"FROM pgqueuer WHERE status = 'picked'"))
				waiting = max(waiting, scalar[int](t, probe, "SELECT count(*) FROM pg_stat_activity "+
					"WHERE wait_event_type = 'Lock' AND wait_event = 'object' AND query LIKE '%pg_notify%'"))
			}
			t.Logf("oldest heartbeat of a running job: %.0f ms; %d echoes waiting for the NOTIFY lock", oldest*1000, waiting)
			if waiting == 0 {
				t.Fatal("no echo waited for the NOTIFY lock: the test proves nothing")
			}
			if oldest >= timeout.Seconds() {
				t.Fatalf("a running job's heartbeat got %.0f ms old (timeout %v): the heartbeats waited for the echo",
					oldest*1000, timeout)
			}
		})
	}
}

func mustExec(t *testing.T, db *sql.DB, query string) {
	t.Helper()
	if _, err := db.Exec(query); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}
