package pgq_test

import (
	"context"
	"database/sql"
	"log"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqtest"
)

// readmeQuickStart is the README's quick start, line for line
// (TestReadmeQuickStart checks it), with the DSN and send as parameters.
func readmeQuickStart(ctx context.Context, dsn string, send func(context.Context, []byte) error) (pgq.Status, error) {
	db, err := sql.Open("pgx", dsn) // lib/pq: pgq.Open("postgres", dsn)
	if err != nil {
		log.Fatal(err)
	}
	if err := pgq.Upgrade(ctx, db); err != nil { // creates the schema, or brings it up to date
		log.Fatal(err)
	}
	// Producer: on db, or inside your own *sql.Tx.
	id, err := pgq.NewQueries(db).Enqueue(ctx, "send_email", []byte(`{"to":"a@b.c"}`))
	if err != nil {
		log.Fatal(err)
	}
	// Worker: handlers per entrypoint, then Run until ctx ends.
	qm := pgq.NewQueueManager(db)
	if err := qm.Entrypoint("send_email", func(ctx context.Context, job *pgq.Job) error {
		return send(ctx, job.Payload)
	}, pgq.WithRetry(pgq.RetryPolicy{MaxAttempts: 5})); err != nil {
		log.Fatal(err)
	}
	go func() {
		if err := qm.Run(ctx); err != nil {
			log.Fatal(err)
		}
	}()
	// Anyone: wait for the outcome.
	w, err := pgq.NewCompletionWatcher(ctx, db)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	status, err := w.WaitFor(ctx, id) // successful, exception, canceled or deleted
	return status, err
}

// TestReadmeQuickStart: the README's quick start is readmeQuickStart's
// body, so it compiles, and it runs: on a fresh database it installs the
// schema, enqueues, runs the job and sees it succeed.
func TestReadmeQuickStart(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile("(?s)## Quick start\n\n```go\n(.*?)```").FindSubmatch(readme)
	if block == nil {
		t.Fatal("README has no Go block under ## Quick start")
	}
	src, err := os.ReadFile("readme_test.go")
	if err != nil {
		t.Fatal(err)
	}
	body := regexp.MustCompile(`(?s)\(pgq\.Status, error\) \{\n(.*?)\treturn status, err\n\}`).FindSubmatch(src)
	if body == nil {
		t.Fatal("readmeQuickStart not found")
	}
	want := strings.ReplaceAll(unindent(string(body[1])), `sql.Open("pgx", dsn)`, `sql.Open("pgx", "postgres://app@localhost/app")`)
	if got := string(block[1]); got != want {
		t.Errorf("README quick start differs from readmeQuickStart:\n--- README\n%s\n--- readme_test.go\n%s", got, want)
	}

	_, dsn := pgqtest.NewDB(t, "pgx", pgqtest.Bare())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sent := make(chan string, 1)
	st, err := readmeQuickStart(ctx, dsn, func(_ context.Context, p []byte) error { sent <- string(p); return nil })
	if err != nil || st != pgq.StatusSuccessful {
		t.Fatalf("status %s, err %v", st, err)
	}
	if p := <-sent; p != `{"to":"a@b.c"}` {
		t.Errorf("handler got %s", p)
	}
}

// unindent removes one tab from the start of every line.
func unindent(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "\t")
	}
	return strings.Join(lines, "\n")
}
