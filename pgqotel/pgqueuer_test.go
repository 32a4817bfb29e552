package pgqotel_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqotel"
	"github.com/pgq-dev/pgq/pgqtest"
)

// pgqueuerEnqueue is run by PGQueuer's own Python: it enqueues one job with
// a traceparent in its headers, as a PGQueuer producer with tracing does.
const pgqueuerEnqueue = `
import asyncio, asyncpg, os
from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries

async def main():
    conn = await asyncpg.connect()
    ids = await Queries(AsyncpgDriver(conn)).enqueue(
        "py", b"from python", headers={"traceparent": os.environ["TRACEPARENT"]})
    print(ids[0])
    await conn.close()

asyncio.run(main())
`

// A job that PGQueuer itself enqueued with a traceparent runs under a span
// of that trace. It needs PGQueuer (PGQUEUER_ENV, set up by make test).
func TestPGQueuerProducedJob(t *testing.T) {
	envFile := os.Getenv("PGQUEUER_ENV")
	if envFile == "" {
		fmt.Fprintln(os.Stderr, "pgqotel: skipping TestPGQueuerProducedJob: PGQueuer is not set up (PGQUEUER_ENV; make test sets it where ../shared/pgqueuer exists)")
		t.Skip("PGQueuer not set up (PGQUEUER_ENV, which make test sets where ../shared/pgqueuer exists)")
	}
	db, dsn := pgqtest.NewDB(t, "pgx")
	tel := newTelemetry(t)
	const traceID, spanID = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"

	cmd := exec.Command("bash", "-c", `. "$PGQUEUER_ENV" && exec "$PY" -c "$SCRIPT"`)
	cmd.Env = append(os.Environ(), "SCRIPT="+pgqueuerEnqueue, "PGOPTIONS=-c jit=off",
		"TRACEPARENT=00-"+traceID+"-"+spanID+"-01")
	libpq := map[string]string{"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "dbname": "PGDATABASE", "password": "PGPASSWORD"}
	for _, field := range strings.Fields(dsn) {
		if k, v, ok := strings.Cut(field, "="); ok && libpq[k] != "" {
			cmd.Env = append(cmd.Env, libpq[k]+"="+strings.Trim(v, "'"))
		}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("PGQueuer enqueue: %v\n%s", err, out)
	}
	var id pgq.JobID
	if _, err := fmt.Sscan(string(out), &id); err != nil {
		t.Fatalf("PGQueuer printed %q: %v", out, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var payload string
	qm := pgq.NewQueueManager(db, pgq.WithMiddleware(pgqotel.Middleware(tel.opts()...)))
	if err := qm.Entrypoint("py", func(_ context.Context, job *pgq.Job) error {
		payload = string(job.Payload)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := qm.Run(ctx, pgq.WithMode(pgq.ModeDrain)); err != nil {
		t.Fatal(err)
	}
	p := tel.span(t, "process py")
	if p.Parent().TraceID().String() != traceID || p.Parent().SpanID().String() != spanID {
		t.Errorf("process span's parent %v, want %s/%s from PGQueuer's headers", p.Parent(), traceID, spanID)
	}
	if got := attr(p, "messaging.message.id").Emit(); got != fmt.Sprint(id) || payload != "from python" {
		t.Errorf("message id %q (want %d), payload %q", got, id, payload)
	}
}
