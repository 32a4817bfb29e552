package pgq

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/pgcluster"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

// TestLaneThroughDeadIdleConns: after a server restart every idle
// connection of the pool is dead. A lane's next statement must go through
// them and run on a live one, not fail once per dead connection (a
// heartbeat a second failed so for seconds after restarts, and its jobs
// went stale: chaos run 9).
func TestLaneThroughDeadIdleConns(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own PostgreSQL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := pgcluster.Start(ctx, pgcluster.Options{Settings: map[string]string{"fsync": "off"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Stop()
	for _, driver := range []string{"pgx", "postgres"} {
		t.Run(driver, func(t *testing.T) {
			db, err := sql.Open(driver, cl.DSN("postgres"))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			const idle = 20
			db.SetMaxIdleConns(idle)
			// Fill the pool with idle connections.
			var conns []*sql.Conn
			for range idle {
				c, err := db.Conn(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if err := c.PingContext(ctx); err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
			}
			for _, c := range conns {
				c.Close()
			}
			l := newLane(db, sqlname.Names{}, true)
			beat := func() error {
				return l.do(ctx, func(s session) error {
					return dbgen.New().Notify(ctx, s.db, dbgen.NotifyParams{Channel: "pgq_test", Payload: "x"})
				})
			}
			if err := cl.Restart(ctx); err != nil {
				t.Fatal(err)
			}
			if err := beat(); err != nil {
				t.Fatalf("the first statement after the restart: %v", err)
			}
		})
	}
}
