// Package sqlname maps PGQueuer's default object names, as the SQL in
// db/queries and db/migrations writes them, to the names a deployment uses:
// a prefix on every object (PGQueuer's PGQUEUER_PREFIX) and an optional
// schema that qualifies tables, the enum type and the trigger function.
package sqlname

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"strings"
	"sync"

	"github.com/pgq-dev/pgq/dbgen"
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
	PausedTable     = "pgqueuer_pgq_paused"   // pgq only: the paused entrypoints
	ProgressTable   = "pgqueuer_pgq_progress" // pgq only: progress handlers report
	AfterTable      = "pgqueuer_pgq_after"    // pgq only: jobs waiting for others (WithAfter)
	AfterLock       = "pgqueuer_pgq_after_lock"
	AfterSettle     = "pgqueuer_pgq_after_settle"
	AfterFunction   = "fn_pgqueuer_pgq_after" // the log's trigger function that settles dependencies
	AfterTrigger    = "tg_pgqueuer_pgq_after"
	FairTurnTable   = "pgqueuer_pgq_fair_turn" // pgq only: each entrypoint's turn on the fair claim
	KeyedIndex      = "pgqueuer_pgq_keyed_idx" // pgq only: the queued jobs with a fairness or serial key
	// ProgressChannel is the pgq-only NOTIFY channel of progress writes
	// (PGQueuer's listeners never see it).
	ProgressChannel = "ch_pgqueuer_pgq_progress"
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

// ProgressChannel returns the deployment's pgq-only channel of progress
// writes.
func (n Names) ProgressChannel() string { return n.Prefix + ProgressChannel }

// IsDefault reports whether n changes nothing.
func (n Names) IsDefault() bool { return n.Prefix == "" && n.Schema == "" }

// queryRefs matches the references a query makes to tables and the enum
// type: whole words only, so index names and 'ch_pgqueuer' are untouched.
var queryRefs = regexp.MustCompile(`\bpgqueuer(_log|_statistics|_schedules|_status|_pgq_paused|_pgq_progress|_pgq_after|_pgq_after_lock|_pgq_after_settle|_pgq_fair_turn)?\b`)

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
// lower-case name that is no keyword and needs no quotes. Any string comes
// out as one identifier: a quote inside is doubled, never closes it.
func QuoteIdent(s string) string {
	if plainIdent(s) && !keywords[s] {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// keywords are PostgreSQL's keywords that are not unreserved (reserved,
// type or function names, column names: quote_ident quotes those), from
// pg_get_keywords() of PostgreSQL 15 and the ones later versions added.
var keywords = map[string]bool{}

func init() {
	for _, k := range strings.Fields(keywordList) {
		keywords[k] = true
	}
}

const keywordList = `
all analyse analyze and any array as asc asymmetric authorization between bigint binary bit boolean
both case cast char character check coalesce collate collation column concurrently constraint create
cross current_catalog current_date current_role current_schema current_time current_timestamp
current_user dec decimal default deferrable desc distinct do else end except exists extract false
fetch float for foreign freeze from full grant greatest group grouping having ilike in initially
inner inout int integer intersect interval into is isnull join lateral leading least left like limit
localtime localtimestamp national natural nchar none normalize not notnull null nullif numeric
offset on only or order out outer overlaps overlay placing position precision primary real
references returning right row select session_user setof similar smallint some substring symmetric
table tablesample then time timestamp to trailing treat trim true union unique user using values
varchar variadic verbose when where window with xmlattributes xmlconcat xmlelement xmlexists
xmlforest xmlnamespaces xmlparse xmlpi xmlroot xmlserialize xmltable json_array json_arrayagg
json_exists json_object json_objectagg json_query json_scalar json_serialize json_table json_value
merge_action system_user
`

// MaxIdentLen is the longest identifier PostgreSQL keeps (NAMEDATALEN-1
// bytes); it truncates longer ones.
const MaxIdentLen = 63

// longestBase is the longest object name a prefix is put in front of
// (pgqueuer_statistics_unique_count).
const longestBase = 32

// MaxPrefixLen is the longest prefix: with it, every object name still fits
// in MaxIdentLen, so no two names are truncated into one.
const MaxPrefixLen = MaxIdentLen - longestBase

// CheckPrefix returns an error naming prefix unless it is "" or lower-case
// letters, digits and underscores (not first) of at most MaxPrefixLen
// bytes: such a prefix can be written into DDL as it is.
func CheckPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if !plainIdent(prefix) {
		return fmt.Errorf("invalid prefix %q: use lower-case letters, digits and underscores", prefix)
	}
	if len(prefix) > MaxPrefixLen {
		return fmt.Errorf("invalid prefix %q: %d bytes, at most %d (PostgreSQL truncates longer names to %d)",
			prefix, len(prefix), MaxPrefixLen, MaxIdentLen)
	}
	return nil
}

// CheckSchema returns an error naming schema unless it is "" or lower-case
// letters, digits and underscores (not first) of at most MaxIdentLen bytes,
// not starting with pg_ (PostgreSQL reserves those) and not a keyword that
// would need quotes.
func CheckSchema(schema string) error {
	if schema == "" {
		return nil
	}
	if !plainIdent(schema) {
		return fmt.Errorf("invalid schema name %q: use lower-case letters, digits and underscores", schema)
	}
	if len(schema) > MaxIdentLen {
		return fmt.Errorf("invalid schema name %q: %d bytes, at most %d", schema, len(schema), MaxIdentLen)
	}
	if keywords[schema] {
		// goose writes the version table's name unquoted.
		return fmt.Errorf("invalid schema name %q: a PostgreSQL keyword; choose another name", schema)
	}
	if strings.HasPrefix(schema, "pg_") {
		return fmt.Errorf("invalid schema name %q: PostgreSQL reserves names starting with pg_", schema)
	}
	return nil
}

func plainIdent(s string) bool {
	for i, r := range s {
		if !(r >= 'a' && r <= 'z' || r == '_' || (i > 0 && r >= '0' && r <= '9')) {
			return false
		}
	}
	return s != ""
}

// DBTX is the subset of *sql.DB, *sql.Conn and *sql.Tx that queries use:
// the generated code's own (pgq.DBTX is the same set, for users).
type DBTX = dbgen.DBTX

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
