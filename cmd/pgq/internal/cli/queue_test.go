package cli_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"

	pgqueue "github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/cmd/pgq/internal/cli"
	"github.com/pgq-dev/pgq/pgqtest"
)

// jobRow is a row of the job table, as `pgq queue` should have written it.
type jobRow struct {
	entrypoint string
	priority   int
	dedupeKey  sql.NullString
	payload    []byte
	headers    sql.NullString
	delay      float64 // execute_after - created, in seconds
	logged     int     // 'queued' log rows
}

func readJob(t *testing.T, db *sql.DB, id string) jobRow {
	t.Helper()
	var j jobRow
	err := db.QueryRow(`SELECT entrypoint, priority, dedupe_key, payload, headers::text,
			extract(epoch FROM execute_after - created)::float8,
			(SELECT count(*) FROM pgqueuer_log l WHERE l.job_id = j.id AND l.status = 'queued')
		FROM pgqueuer j WHERE id = $1`, id).
		Scan(&j.entrypoint, &j.priority, &j.dedupeKey, &j.payload, &j.headers, &j.delay, &j.logged)
	if err != nil {
		t.Fatalf("job %s: %v", id, err)
	}
	return j
}

// ids parses the printed job ids.
func ids(t *testing.T, out string) []string {
	t.Helper()
	lines := strings.Fields(out)
	for _, l := range lines {
		if _, err := strconv.ParseInt(l, 10, 64); err != nil {
			t.Fatalf("output %q is not job ids", out)
		}
	}
	return lines
}

func TestQueue(t *testing.T) {
	t.Parallel()
	for _, driver := range pgqtest.Drivers() {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			db, dsn := pgqtest.NewDB(t, driver)
			conn := []string{"--driver", driver, "--dsn", dsn}

			// Flags after the positional arguments.
			out := pgq(t, append([]string{"queue", "email", `{"to":"a@example.com"}`, "--priority", "5",
				"--dedupe-key", "welcome-1", "--execute-after", "1h", "--header", "trace=abc", "--header", "lang=en"},
				conn...)...).ok(t).stdout
			got := ids(t, out)
			if len(got) != 1 {
				t.Fatalf("queue printed %d ids: %q", len(got), out)
			}
			j := readJob(t, db, got[0])
			if j.entrypoint != "email" || j.priority != 5 || j.dedupeKey.String != "welcome-1" ||
				string(j.payload) != `{"to":"a@example.com"}` || j.logged != 1 {
				t.Errorf("job row = %+v", j)
			}
			if j.delay < 3599 || j.delay > 3601 {
				t.Errorf("execute_after - created = %vs, want 3600s", j.delay)
			}
			var h map[string]string
			if err := json.Unmarshal([]byte(j.headers.String), &h); err != nil || h["trace"] != "abc" || h["lang"] != "en" {
				t.Errorf("headers = %q (%v)", j.headers.String, err)
			}

			// The same dedupe key again.
			pgq(t, append([]string{"queue", "email", "--dedupe-key", "welcome-1"}, conn...)...).
				fails(t, 1, `dedupe key "welcome-1"`)

			// Flags before the arguments, no payload, seconds as a number.
			got = ids(t, pgq(t, append(append([]string{"queue", "--priority", "-3", "--execute-after", "90"}, conn...), "resize")...).ok(t).stdout)
			j = readJob(t, db, got[0])
			if j.entrypoint != "resize" || j.priority != -3 || j.payload != nil || j.dedupeKey.Valid || j.headers.Valid ||
				j.delay < 89 || j.delay > 91 {
				t.Errorf("job row = %+v, want resize, priority -3, NULL payload, key and headers, 90s", j)
			}

			// The payload from standard input; "--" ends the flags.
			got = ids(t, pgqIn(t, "from stdin\n", append([]string{"queue"}, append(conn, "--", "report", "-")...)...).ok(t).stdout)
			if j := readJob(t, db, got[0]); string(j.payload) != "from stdin\n" || j.delay != 0 {
				t.Errorf("job row = %+v, want the payload from stdin", j)
			}
			got = ids(t, pgq(t, append([]string{"queue", "report"}, append(conn, "--", "--priority")...)...).ok(t).stdout)
			if j := readJob(t, db, got[0]); string(j.payload) != "--priority" || j.priority != 0 {
				t.Errorf("after --, %q should be the payload: %+v", "--priority", j)
			}

			// --count.
			got = ids(t, pgq(t, append([]string{"queue", "webhook", "x", "--count", "2500", "--priority", "2"}, conn...)...).ok(t).stdout)
			if len(got) != 2500 {
				t.Fatalf("--count 2500 printed %d ids", len(got))
			}
			seen := map[string]bool{}
			for _, id := range got {
				seen[id] = true
			}
			var n int
			if err := db.QueryRow("SELECT count(*) FROM pgqueuer WHERE entrypoint = 'webhook' AND priority = 2 AND payload = 'x'").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 2500 || len(seen) != 2500 {
				t.Errorf("--count 2500: %d rows, %d distinct ids", n, len(seen))
			}
		})
	}
}

func TestQueueSchemaMissing(t *testing.T) {
	t.Parallel()
	for _, driver := range pgqtest.Drivers() {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			_, dsn := pgqtest.NewDB(t, driver, pgqtest.Bare())
			pgq(t, "queue", "email", "{}", "--driver", driver, "--dsn", dsn).
				fails(t, 1, "queue: the pgq schema is not installed in this database", "run `pgq install`")
			pgq(t, "queue", "email", "--count", "3", "--driver", driver, "--dsn", dsn).fails(t, 1, "run `pgq install`")
			pgq(t, "verify", "--driver", driver, "--dsn", dsn).fails(t, 1, "run `pgq install`")
		})
	}
}

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestQueuePayloadOverLimit: a payload on standard input larger than
// pgq.MaxPayloadSize is refused before connecting, naming the limit; the
// error does not claim a size it never read. Reading 256 MiB takes tens of
// seconds on a loaded machine, so it runs with TestMaxPayloadRoundTrip
// (PGQ_TEST_MAXPAYLOAD=1, make maxpayload).
func TestQueuePayloadOverLimit(t *testing.T) {
	if os.Getenv("PGQ_TEST_MAXPAYLOAD") != "1" {
		t.Skip("reads 256 MiB from standard input: set PGQ_TEST_MAXPAYLOAD=1 or run make maxpayload")
	}
	var out, errb bytes.Buffer
	in := io.LimitReader(zeros{}, pgqueue.MaxPayloadSize+4096)
	code := cli.Main(context.Background(), []string{"queue", "--dsn", "host=/nonexistent", "big", "-"}, in, &out, &errb)
	r := result{args: []string{"queue", "big", "-"}, code: code, stdout: out.String(), stderr: errb.String()}
	r.fails(t, 1, fmt.Sprintf("the payload on standard input is larger than pgq.MaxPayloadSize (%d bytes)", pgqueue.MaxPayloadSize))
}
