package pgq_test

import (
	"bufio"
	"context"
	"database/sql"
	"strings"
	"testing"

	"github.com/pgq-dev/pgq"
)

// pyParseEvent listens on the queue's channel, prints "ready", then parses
// the first notification as PGQueuer's listener does (models.AnyEvent) and
// prints its type and operation, or the parse error.
var pyParseEvent = pyScript("from pgqueuer import models\n", `
    got = asyncio.get_running_loop().create_future()
    await conn.add_listener("ch_pgqueuer", lambda *args: got.done() or got.set_result(args[3]))
    print("ready", flush=True)
    payload = await asyncio.wait_for(got, 60)
    try:
        ev = models.AnyEvent.model_validate_json(payload).root
        print("parsed", ev.type, ev.operation, flush=True)
    except Exception as exc:
        print("unparsed", type(exc).__name__, payload, flush=True)`)

// TestPGQueuerIgnoresPause: PGQueuer 1.3.2 on a schema with pgq's paused
// table works as before: its worker runs the jobs of an entrypoint pgq has
// paused (it does not honour pauses, as documented), and Resume's
// notification is an event its listener parses.
func TestPGQueuerIgnoresPause(t *testing.T) {
	eachPGQueuerDriver(t, func(t *testing.T, ctx context.Context, db *sql.DB, dsn string) {
		q := pgq.NewQueries(db)
		if err := q.Pause(ctx, "to_py"); err != nil {
			t.Fatal(err)
		}
		for range 10 {
			if _, err := q.Enqueue(ctx, "to_py", []byte("from-go")); err != nil {
				t.Fatal(err)
			}
		}
		out, _ := runPGQueuer(t, ctx, dsn, false, "-c", pyWorker, "to_py")
		if strings.TrimSpace(out) != "10 ['from-go']" {
			t.Fatalf("PGQueuer's QueueManager on a paused entrypoint: %q", out)
		}

		cmd := pgqueuerCmd(ctx, t, dsn, "-c", pyParseEvent)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(stdout)
		if !lines.Scan() || lines.Text() != "ready" {
			_ = cmd.Wait()
			t.Fatalf("PGQueuer listener did not start: %q %s", lines.Text(), stderr.String())
		}
		if err := q.Resume(ctx, "to_py"); err != nil {
			t.Fatal(err)
		}
		lines.Scan()
		got := lines.Text()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("PGQueuer listener: %v\n%s", err, stderr.String())
		}
		if got != "parsed table_changed_event update" {
			t.Fatalf("PGQueuer's parse of Resume's notification: %q", got)
		}
	})
}
