package sqlname_test

import (
	"context"
	"strings"
	"testing"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/internal/sqlname"
	"github.com/pgq-dev/pgq/pgqtest"
)

func TestMain(m *testing.M) { pgqtest.Main(m) }

var hostile = []string{`x"; drop table t; --`, `a"b`, `"`, `""`, "Jobs", "user", "select", "1abc",
	"a.b", "a b", "it's", "$1", `\`, "é", "public", "table", "order"}

// TestQuotedNamesOnTheServer checks QuoteIdent against the server: it
// quotes as quote_ident does, and a table created under each hostile name
// gets exactly that name while the table t is left alone.
func TestQuotedNamesOnTheServer(t *testing.T) {
	ctx := context.Background()
	db, _ := pgqtest.NewDB(t, "pgx", pgqtest.Bare())
	if _, err := db.ExecContext(ctx, "CREATE TABLE t (x int)"); err != nil {
		t.Fatal(err)
	}
	rows, err := db.QueryContext(ctx, "SELECT word FROM pg_get_keywords()")
	if err != nil {
		t.Fatal(err)
	}
	names := append([]string{}, hostile...)
	for rows.Next() {
		var w string
		if err := rows.Scan(&w); err != nil {
			t.Fatal(err)
		}
		names = append(names, w)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, s := range names {
		var want string
		if err := db.QueryRowContext(ctx, "SELECT quote_ident($1)", s).Scan(&want); err != nil {
			t.Fatal(err)
		}
		if got := sqlname.QuoteIdent(s); got != want {
			t.Errorf("QuoteIdent(%q) = %s, quote_ident gives %s", s, got, want)
		}
	}
	for _, s := range hostile {
		if _, err := db.ExecContext(ctx, "CREATE TABLE "+sqlname.QuoteIdent(s)+" (x int)"); err != nil {
			t.Errorf("CREATE TABLE %s: %v", sqlname.QuoteIdent(s), err)
			continue
		}
		var n int
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM pg_class WHERE relname = $1", s).Scan(&n); err != nil || n != 1 {
			t.Errorf("table %q: %d found (%v), want 1", s, n, err)
		}
	}
	if _, err := db.ExecContext(ctx, "SELECT * FROM t"); err != nil {
		t.Fatalf("table t is gone: %v", err)
	}
}

// TestHostileNamesRefused: a prefix or schema that would have to be quoted,
// or that PostgreSQL would truncate, is refused before any SQL runs; a
// keyword as schema is refused too (goose would not quote it).
func TestHostileNamesRefused(t *testing.T) {
	ctx := context.Background()
	for _, driver := range pgqtest.Drivers() {
		t.Run(driver, func(t *testing.T) {
			db, _ := pgqtest.NewDB(t, driver, pgqtest.Bare())
			if _, err := db.ExecContext(ctx, "CREATE TABLE t (x int)"); err != nil {
				t.Fatal(err)
			}
			bad := []pgq.SchemaOption{
				pgq.WithPrefix(`x"; drop table t; --`), pgq.WithSchema(`x"; drop table t; --`),
				pgq.WithPrefix("x; drop table t; --"), pgq.WithPrefix(strings.Repeat("p", 32)),
				pgq.WithSchema("pg_jobs"), pgq.WithSchema("user"), pgq.WithSchema(strings.Repeat("s", 64)),
			}
			for _, o := range bad {
				if err := pgq.Install(ctx, db, o); err == nil || !strings.Contains(err.Error(), "invalid") {
					t.Errorf("Install with a hostile name: %v, want it refused", err)
				}
				if _, err := pgq.InstallSQL(o); err == nil {
					t.Errorf("InstallSQL with a hostile name: no error")
				}
			}
			if _, err := db.ExecContext(ctx, "SELECT * FROM t"); err != nil {
				t.Fatalf("table t is gone: %v", err)
			}
			// The longest prefix works.
			opts := []pgq.SchemaOption{pgq.WithPrefix(strings.Repeat("p", sqlname.MaxPrefixLen)), pgq.WithSchema("jobs")}
			if err := pgq.Install(ctx, db, opts...); err != nil {
				t.Fatalf("Install: %v", err)
			}
			if err := pgq.Verify(ctx, db, opts...); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			q := pgq.NewQueries(db, pgq.WithPrefix(strings.Repeat("p", sqlname.MaxPrefixLen)), pgq.WithSchema("jobs"))
			if _, err := q.Enqueue(ctx, "e", nil); err != nil {
				t.Fatalf("Enqueue: %v", err)
			}
		})
	}
}
