package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/pgq-dev/pgq/dbgen"
)

// errCaptured stops a dbgen call once its statement has been captured.
var errCaptured = errors.New("statement captured")

// capture is a dbgen.DBTX that records the statement and arguments of the
// first query made through it instead of running it, so that the tool can
// EXPLAIN exactly what the library runs.
type capture struct {
	tx    *sql.Tx // answers QueryRowContext with no rows
	query string
	args  []any
}

var _ dbgen.DBTX = (*capture)(nil)

func (c *capture) record(query string, args []any) {
	if c.query == "" {
		c.query, c.args = query, args
	}
}

func (c *capture) ExecContext(_ context.Context, query string, args ...any) (sql.Result, error) {
	c.record(query, args)
	return nil, errCaptured
}

func (c *capture) PrepareContext(_ context.Context, query string) (*sql.Stmt, error) {
	c.record(query, nil)
	return nil, errCaptured
}

func (c *capture) QueryContext(_ context.Context, query string, args ...any) (*sql.Rows, error) {
	c.record(query, args)
	return nil, errCaptured
}

// QueryRowContext records the statement and returns a row whose Scan
// fails with sql.ErrNoRows. (The queries the tool explains are :many.)
func (c *capture) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	c.record(query, args)
	return c.tx.QueryRowContext(ctx, sqlNoRow)
}

// explain runs EXPLAIN (ANALYZE, BUFFERS) of a captured statement on tx and
// returns the plan's text. ANALYZE executes the statement: callers roll tx
// back.
func explain(ctx context.Context, tx *sql.Tx, c *capture) (Plan, error) {
	if c.query == "" {
		return Plan{}, errors.New("no statement captured")
	}
	rows, err := tx.QueryContext(ctx, explainPrefix+c.query, c.args...)
	if err != nil {
		return Plan{}, fmt.Errorf("explain: %w", err)
	}
	defer rows.Close()
	var lines []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return Plan{}, fmt.Errorf("explain: %w", err)
		}
		lines = append(lines, line)
	}
	if err := rows.Err(); err != nil {
		return Plan{}, fmt.Errorf("explain: %w", err)
	}
	return parsePlan(strings.Join(lines, "\n")), nil
}

// Plan is the output of EXPLAIN (ANALYZE, BUFFERS) with its headline
// figures picked out.
type Plan struct {
	ExecutionMs float64 `json:"execution_ms"`
	PlanningMs  float64 `json:"planning_ms"`
	// SharedHit and SharedRead are the top node's buffer counts (the whole
	// statement's).
	SharedHit  int64  `json:"shared_hit"`
	SharedRead int64  `json:"shared_read"`
	Text       string `json:"text"`
}

var (
	execTimeRE = regexp.MustCompile(`Execution Time: ([0-9.]+) ms`)
	planTimeRE = regexp.MustCompile(`Planning Time: ([0-9.]+) ms`)
	hitRE      = regexp.MustCompile(`shared hit=([0-9]+)`)
	readRE     = regexp.MustCompile(`read=([0-9]+)`)
)

func parsePlan(text string) Plan {
	p := Plan{Text: text}
	num := func(re *regexp.Regexp, s string) float64 {
		if m := re.FindStringSubmatch(s); m != nil {
			f, _ := strconv.ParseFloat(m[1], 64)
			return f
		}
		return 0
	}
	p.ExecutionMs, p.PlanningMs = num(execTimeRE, text), num(planTimeRE, text)
	// The first Buffers line belongs to the top node.
	for line := range strings.SplitSeq(text, "\n") {
		if t := strings.TrimSpace(line); strings.HasPrefix(t, "Buffers: shared") {
			p.SharedHit, p.SharedRead = int64(num(hitRE, t)), int64(num(readRE, t))
			break
		}
	}
	return p
}
