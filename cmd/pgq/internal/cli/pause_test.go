package cli_test

import (
	"context"
	"testing"

	pgqueue "github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqtest"
)

// TestPauseResumeCommands: pgq pause stores the pause (Paused sees it, the
// dashboard lists it), pgq resume removes it; a missing or extra argument
// is a usage error.
func TestPauseResumeCommands(t *testing.T) {
	t.Parallel()
	for _, driver := range pgqtest.Drivers() {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db, dsn := pgqtest.NewDB(t, driver)
			run := func(args ...string) result {
				t.Helper()
				return pgq(t, append(args, "--dsn", dsn, "--driver", driver)...)
			}
			if r := run("pause", "email").ok(t); r.stdout != "paused email\n" {
				t.Errorf("pause stdout %q", r.stdout)
			}
			q := pgqueue.NewQueries(db)
			if p, err := q.Paused(ctx); err != nil || len(p) != 1 || p[0].Entrypoint != "email" {
				t.Fatalf("Paused after pgq pause: %+v, %v", p, err)
			}
			rows := table(t, run("dashboard", "--once").ok(t).stdout, "ENTRYPOINT  SINCE")
			if len(rows) != 1 || rows[0][0] != "email" {
				t.Errorf("dashboard's paused table: %q", rows)
			}
			if r := run("resume", "email").ok(t); r.stdout != "resumed email\n" {
				t.Errorf("resume stdout %q", r.stdout)
			}
			if p, err := q.Paused(ctx); err != nil || len(p) != 0 {
				t.Fatalf("Paused after pgq resume: %+v, %v", p, err)
			}
		})
	}
	pgq(t, "pause").fails(t, 2, "pause takes one ENTRYPOINT, got 0 arguments")
	pgq(t, "resume", "a", "b").fails(t, 2, "resume takes one ENTRYPOINT, got 2 arguments")
}
