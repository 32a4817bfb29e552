package cli_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgq-dev/pgq/cmd/pgq/internal/cli"
	"github.com/pgq-dev/pgq/pgqtest"
)

func TestMain(m *testing.M) { pgqtest.Main(m) }

// result is what one pgq command did.
type result struct {
	args           []string
	code           int
	stdout, stderr string
}

// pgq runs the command line args in-process.
func pgq(t *testing.T, args ...string) result {
	t.Helper()
	return pgqIn(t, "", args...)
}

// pgqIn runs args with stdin as standard input.
func pgqIn(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return pgqCtx(ctx, stdin, args...)
}

func pgqCtx(ctx context.Context, stdin string, args ...string) result {
	var out, errb bytes.Buffer
	code := cli.Main(ctx, args, strings.NewReader(stdin), &out, &errb)
	return result{args: args, code: code, stdout: out.String(), stderr: errb.String()}
}

// ok fails the test unless the command succeeded.
func (r result) ok(t *testing.T) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("pgq %q: exit %d, want 0\nstdout:\n%s\nstderr:\n%s", r.args, r.code, r.stdout, r.stderr)
	}
	return r
}

// fails checks that the command exited with code and printed exactly one
// line on stderr, starting with "pgq: " and containing each of want.
func (r result) fails(t *testing.T, code int, want ...string) result {
	t.Helper()
	if r.code != code {
		t.Errorf("pgq %q: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.args, r.code, code, r.stdout, r.stderr)
	}
	if !strings.HasPrefix(r.stderr, "pgq: ") || strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") {
		t.Errorf("pgq %q: stderr is not one line starting with \"pgq: \":\n%s", r.args, r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("pgq %q: stderr %q does not contain %q", r.args, r.stderr, w)
		}
	}
	return r
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		r := pgq(t, args...).ok(t)
		for _, w := range []string{"Usage: pgq COMMAND", "install", "upgrade", "uninstall", "verify", "sql", "queue", "demo", "bench", "PGQ_DSN"} {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("pgq %q: usage lacks %q:\n%s", args, w, r.stdout)
			}
		}
		if r.stderr != "" {
			t.Errorf("pgq %q: stderr %q, want none", args, r.stderr)
		}
	}
	for _, args := range [][]string{{"queue", "-h"}, {"queue", "--help"}, {"help", "queue"}, {"queue", "email", "-h"}} {
		r := pgq(t, args...).ok(t)
		for _, w := range []string{"Usage: pgq queue ENTRYPOINT [PAYLOAD]", "--priority", "--dedupe-key", "--execute-after", "--header", "--count", "--dsn", "--driver", "--prefix", "--schema"} {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("pgq %q: usage lacks %q:\n%s", args, w, r.stdout)
			}
		}
	}
	for _, cmd := range []string{"install", "upgrade", "uninstall", "verify", "sql", "demo"} {
		r := pgq(t, cmd, "-h").ok(t)
		if !strings.Contains(r.stdout, "Usage: pgq "+cmd) {
			t.Errorf("pgq %s -h:\n%s", cmd, r.stdout)
		}
		if strings.Contains(r.stdout, "  --pg-dsn") {
			t.Errorf("pgq %s -h lists the PGQueuer aliases as flags:\n%s", cmd, r.stdout)
		}
	}
	if r := pgq(t, "install", "-h"); !strings.Contains(r.stdout, "PGQueuer's spellings work too: -d, --pg-database, --pg-dsn") {
		t.Errorf("pgq install -h does not mention the PGQueuer spellings:\n%s", r.stdout)
	}
	r := pgq(t).fails(t, 2, "missing command")
	if !strings.Contains(r.stdout, "Usage: pgq COMMAND") {
		t.Errorf("pgq without arguments prints no usage:\n%s", r.stdout)
	}
}

// TestUsageErrors covers mistakes found before any connection: each exits
// with 2 and one line.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"bogus"}, []string{`unknown command "bogus"`, "pgq help"}},
		{[]string{"--bogus", "x", "verify"}, []string{"verify: unknown flag --bogus"}},
		{[]string{"--dsn", "x"}, []string{"missing command after --dsn x"}},
		{[]string{"verify", "--dsn", "x", "--pg-host", "y"}, []string{"either --dsn or the --pg-host"}},
		{[]string{"verify", "--expect", "maybe"}, []string{`invalid value "maybe" for --expect`}},
		{[]string{"install", "-d", "fast"}, []string{`invalid value "fast" for --d`}},
		{[]string{"help", "bogus"}, []string{`unknown command "bogus"`}},
		{[]string{"verify", "--bogus"}, []string{"verify: unknown flag --bogus", "pgq verify -h"}},
		{[]string{"queue", "email", "--bogus=1"}, []string{"unknown flag --bogus"}},
		{[]string{"queue"}, []string{"queue: missing ENTRYPOINT"}},
		{[]string{"queue", "--priority", "5"}, []string{"missing ENTRYPOINT"}},
		{[]string{"queue", ""}, []string{"missing ENTRYPOINT"}},
		{[]string{"queue", "a", "b", "c"}, []string{`unexpected argument "c"`}},
		{[]string{"queue", "a", "--priority"}, []string{"missing value for --priority"}},
		{[]string{"queue", "a", "--priority", "high"}, []string{`invalid value "high" for --priority`}},
		{[]string{"queue", "a", "--priority", "99999999999"}, []string{"--priority", "-2147483648 to 2147483647"}},
		{[]string{"queue", "a", "--execute-after", "soon"}, []string{`invalid value "soon" for --execute-after`, "30s"}},
		{[]string{"queue", "a", "--execute-after", "-5s"}, []string{"--execute-after", "negative"}},
		{[]string{"queue", "a", "--header", "novalue"}, []string{"--header", "key=value"}},
		{[]string{"queue", "a", "--count", "0"}, []string{"--count"}},
		{[]string{"queue", "a", "--count", "2", "--dedupe-key", "k"}, []string{"--dedupe-key cannot be used with --count 2"}},
		{[]string{"queue", "a", "--driver", "mysql"}, []string{`unknown --driver "mysql"`}},
		{[]string{"queue", "a", "--prefix", "Bad-Prefix"}, []string{`invalid prefix "Bad-Prefix"`}},
		{[]string{"install", "--durability", "fast"}, []string{`invalid value "fast" for --durability`, "durable, balanced or volatile"}},
		{[]string{"upgrade", "--durability="}, []string{"--durability"}},
		{[]string{"install", "extra"}, []string{`unexpected argument "extra"`}},
		{[]string{"verify", "--schema", "a b"}, []string{`invalid schema name "a b"`}},
		{[]string{"sql"}, []string{"sql: missing what to print"}},
		{[]string{"sql", "drop"}, []string{`unknown SQL "drop"`}},
		{[]string{"sql", "install", "--dsn", "x"}, []string{"unknown flag --dsn"}},
		{[]string{"sql", "grants", "--for", "worker"}, []string{"missing --role"}},
		{[]string{"sql", "grants", "--role", "r"}, []string{"missing --for"}},
		{[]string{"sql", "grants", "--role", "r", "--for", "owner"}, []string{`unknown --for "owner"`}},
		{[]string{"sql", "install", "--role", "r"}, []string{"--role and --for belong to sql grants"}},
		{[]string{"demo", "--jobs", "0"}, []string{"--jobs"}},
		{[]string{"demo", "--workers", "many"}, []string{"--workers"}},
		{[]string{"demo", "now"}, []string{`unexpected argument "now"`}},
		{[]string{"bench"}, []string{"bench: missing benchmark"}},
		{[]string{"bench", "no-such-benchmark"}, []string{"unknown benchmark"}},
	} {
		pgq(t, tc.args...).fails(t, 2, tc.want...)
	}
}

// TestBench checks that `pgq bench` reaches package bench; its benchmarks
// are tested there.
func TestBench(t *testing.T) {
	t.Parallel()
	if r := pgq(t, "bench", "-h").ok(t); !strings.Contains(r.stdout, "pgq bench BENCHMARK") {
		t.Errorf("pgq bench -h:\n%s", r.stdout)
	}
}

// TestBadDSN checks that a server that cannot be reached, or a DSN that
// cannot be parsed, fails fast with one line.
func TestBadDSN(t *testing.T) {
	t.Parallel()
	const unreachable = "host=127.0.0.1 port=1 user=nobody dbname=nothing sslmode=disable connect_timeout=2"
	for _, driver := range pgqtest.Drivers() {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			for _, args := range [][]string{
				{"verify"}, {"install"}, {"upgrade"}, {"uninstall"}, {"queue", "email", "{}"},
				{"demo", "--jobs", "10"},
			} {
				begin := time.Now()
				args = append(args, "--driver", driver, "--dsn", unreachable)
				pgq(t, args...).fails(t, 1, "cannot connect to PostgreSQL (DSN from --dsn)", "refused")
				if d := time.Since(begin); d > 20*time.Second {
					t.Errorf("pgq %q took %v to fail", args, d)
				}
			}
			pgq(t, "verify", "--driver", driver, "--dsn", "this is not a dsn").fails(t, 1, "cannot connect to PostgreSQL")
		})
	}
}

// TestInterrupted checks that a command whose context has ended says so.
func TestInterrupted(t *testing.T) {
	t.Parallel()
	_, dsn := pgqtest.NewDB(t, "pgx")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, args := range [][]string{{"verify", "--dsn", dsn}, {"demo", "--dsn", dsn, "--jobs", "10"}} {
		pgqCtx(ctx, "", args...).fails(t, 1, args[0]+": interrupted")
	}
}
