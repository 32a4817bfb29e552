package notifier

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/lib/pq"
)

// TestPQListenerPingDuringFlood: a lib/pq listener that checks its
// connection (Ping) while more notifications are on their way than pq
// buffers must go on delivering them and stop when asked. Ping waits for
// the server's reply, which comes after those notifications; called from
// the goroutine that reads pl.Notify it deadlocked the listener: no more
// notifications, a Run that never returned, and on the server a backend
// blocked writing to a client that no longer reads, which blocks every
// DROP DATABASE of the cluster (it waits for all backends to absorb a
// barrier). Needs PGQ_TEST_DSN (any database).
func TestPQListenerPingDuringFlood(t *testing.T) {
	dsn := os.Getenv("PGQ_TEST_DSN")
	if dsn == "" {
		t.Skip("PGQ_TEST_DSN is not set")
	}
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	channel := fmt.Sprintf("pgq_flood_%d_%d", os.Getpid(), time.Now().UnixNano())
	l := &pqListener{dsn: dsn, channel: channel, logger: slog.New(slog.DiscardHandler), ping: time.Millisecond}

	const n = 20_000
	var got atomic.Int64
	connected := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- l.Run(ctx, Callbacks{
			Notify: func(string) { got.Add(1) },
			Connected: func() {
				select {
				case connected <- struct{}{}:
				default:
				}
			},
		})
	}()
	select {
	case <-connected:
	case <-time.After(30 * time.Second):
		t.Fatal("the listener did not connect within 30 s")
	}
	if _, err := db.Exec(`SELECT count(pg_notify($1, i::text)) FROM generate_series(1, $2::int) AS i`, channel, n); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for got.Load() < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c := got.Load(); c < n {
		t.Errorf("%d of %d notifications delivered within 60 s, pinging every ms", c, n)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30 s of its ctx ending")
	}
}
