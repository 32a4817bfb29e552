// Package sqlname maps PGQueuer's default object names, as the SQL in
// db/queries and db/migrations writes them, to the names a deployment uses:
// a prefix on every object (PGQueuer's PGQUEUER_PREFIX) and an optional
// schema that qualifies tables, the enum type and the trigger function.
package sqlname

import (
	"context"
	"database/sql"
	"regexp"
	"strings"
	"sync"
)

// Base names of the objects pgq shares with PGQueuer.
const (
	JobTable        = "pgqueuer"
	LogTable        = "pgqueuer_log"
	StatisticsTable = "pgqueuer_statistics"
	SchedulesTable  = "pgqueuer_schedules"
	StatusType      = "pgqueuer_status"
	Function        = "fn_pgqueuer_changed"
	Trigger         = "tg_pgqueuer_changed"
	Channel         = "ch_pgqueuer"
	VersionTable    = "pgqueuer_pgq_version"
)

// Names is a deployment's naming: a prefix and a schema, both optional.
// The zero value is PGQueuer's defaults in the connection's current schema.
type Names struct {
	Prefix string
	Schema string
}

// Name returns base with the prefix applied, unqualified.
func (n Names) Name(base string) string { return n.Prefix + base }

// Qualified returns base with the prefix applied, qualified by the schema
// when one is set, quoted where needed.
func (n Names) Qualified(base string) string {
	name := QuoteIdent(n.Prefix + base)
	if n.Schema == "" {
		return name
	}
	return QuoteIdent(n.Schema) + "." + name
}

// Channel returns the NOTIFY channel of the deployment.
func (n Names) Channel() string { return n.Prefix + Channel }

// IsDefault reports whether n changes nothing.
func (n Names) IsDefault() bool { return n.Prefix == "" && n.Schema == "" }

// queryRefs matches the references a query makes to tables and the enum
// type: whole words only, so index names and 'ch_pgqueuer' are untouched.
var queryRefs = regexp.MustCompile(`\bpgqueuer(_log|_statistics|_schedules|_status)?\b`)

// ddlNames matches every object name in the migrations: tables, indexes,
// the type, the function, the trigger and the channel.
var ddlNames = regexp.MustCompile(`\b(ch_|fn_|tg_)?pgqueuer\w*\b`)

// Query rewrites a query of db/queries for n.
func (n Names) Query(q string) string {
	if n.IsDefault() {
		return q
	}
	return queryRefs.ReplaceAllStringFunc(q, n.Qualified)
}

// DDL rewrites a migration of db/migrations for n: every object name gets
// the prefix. The schema is not written into the DDL; the migration runs
// with search_path set to it.
func (n Names) DDL(ddl string) string {
	if n.Prefix == "" {
		return ddl
	}
	return ddlNames.ReplaceAllStringFunc(ddl, func(s string) string { return n.Prefix + s })
}

// QuoteIdent quotes an identifier for PostgreSQL unless it is a plain
// lower-case name that needs no quotes.
func QuoteIdent(s string) string {
	plain := s != ""
	for i, r := range s {
		if !(r >= 'a' && r <= 'z' || r == '_' || (i > 0 && r >= '0' && r <= '9')) {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// DBTX is the subset of *sql.DB, *sql.Conn and *sql.Tx that queries use.
type DBTX interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
	PrepareContext(context.Context, string) (*sql.Stmt, error)
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
	QueryRowContext(context.Context, string, ...any) *sql.Row
}

// Rewriter caches the rewritten text of each query for one Names.
type Rewriter struct {
	names Names
	cache sync.Map // original query -> rewritten query
}

// NewRewriter returns a Rewriter for n.
func NewRewriter(n Names) *Rewriter { return &Rewriter{names: n} }

// Names returns the naming the Rewriter applies.
func (r *Rewriter) Names() Names { return r.names }

// Rewrite returns q rewritten, from the cache after the first time.
func (r *Rewriter) Rewrite(q string) string {
	if r.names.IsDefault() {
		return q
	}
	if v, ok := r.cache.Load(q); ok {
		return v.(string)
	}
	out := r.names.Query(q)
	r.cache.Store(q, out)
	return out
}

// Wrap returns db with every query rewritten before it is sent.
func (r *Rewriter) Wrap(db DBTX) DBTX {
	if r.names.IsDefault() {
		return db
	}
	return wrapped{db: db, r: r}
}

type wrapped struct {
	db DBTX
	r  *Rewriter
}

func (w wrapped) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return w.db.ExecContext(ctx, w.r.Rewrite(q), args...)
}

func (w wrapped) PrepareContext(ctx context.Context, q string) (*sql.Stmt, error) {
	return w.db.PrepareContext(ctx, w.r.Rewrite(q))
}

func (w wrapped) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return w.db.QueryContext(ctx, w.r.Rewrite(q), args...)
}

func (w wrapped) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return w.db.QueryRowContext(ctx, w.r.Rewrite(q), args...)
}
