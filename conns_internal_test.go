package pgq

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"strings"
	"sync"
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

// TestLaneConnectWithin: a lane that bounds its wait for a connection
// gives up a connection attempt the server never answers (after a
// restart in a chaos run, one hung for 4.4 s and held a worker's
// heartbeats up past the timeout) and tries a new one on its next
// statement. The server here accepts connections and never says a word.
func TestLaneConnectWithin(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // open, silent
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			_ = c.Close()
		}
	}()
	addr := ln.Addr().(*net.TCPAddr)
	for _, driver := range []string{"pgx", "postgres"} {
		t.Run(driver, func(t *testing.T) {
			db, err := sql.Open(driver, fmt.Sprintf("host=127.0.0.1 port=%d user=x dbname=x sslmode=disable", addr.Port))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			l := newLane(db, sqlname.Names{}, true).connectWithin(200 * time.Millisecond)
			for range 2 {
				began := time.Now()
				err := l.do(ctx, func(s session) error { return nil })
				took := time.Since(began)
				if err == nil || !strings.Contains(err.Error(), "no connection within 200ms") {
					t.Fatalf("statement on a silent server: %v, want no connection within 200ms", err)
				}
				if took > 2*time.Second {
					t.Fatalf("gave up after %v, want about 200ms", took)
				}
			}
		})
	}
}
