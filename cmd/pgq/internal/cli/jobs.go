package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgq-dev/pgq"
)

// Limits of `pgq failed`.
const (
	failedDefaultLimit = 25
	failedMaxLimit     = 100_000
)

// maxErrorWidth is how much of an error message a table shows.
const maxErrorWidth = 120

// newTable returns a tabwriter for the aligned tables the commands print.
func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

// formatTime prints a time in UTC to the second, or "-" for the zero time.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02T15:04:05Z")
}

// formatAge prints a duration rounded to the second ("-" for none).
func formatAge(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	if d < time.Second {
		return "<1s"
	}
	return d.Round(time.Second).String()
}

// oneLineMessage makes an error message fit on one line of a table.
func oneLineMessage(msg string) string {
	msg = strings.Join(strings.Fields(msg), " ")
	if msg == "" {
		return "-"
	}
	if r := []rune(msg); len(r) > maxErrorWidth {
		msg = string(r[:maxErrorWidth-1]) + "…"
	}
	return msg
}

// parseJobIDs parses job ids given as arguments; several may share one
// argument, separated by commas. A bad one is a usage error naming it.
func parseJobIDs(args []string) ([]pgq.JobID, error) {
	if len(args) == 0 {
		return nil, usagef("missing job IDS: give one or more job ids")
	}
	var ids []pgq.JobID
	for _, a := range args {
		for _, s := range strings.Split(a, ",") {
			n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
			if err != nil || n < 1 {
				return nil, usagef("bad job id %q: want a positive whole number", s)
			}
			ids = append(ids, pgq.JobID(n))
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

func joinIDs(ids []pgq.JobID) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatInt(int64(id), 10)
	}
	return strings.Join(s, ", ")
}

// failedCmd is `pgq failed`.
type failedCmd struct {
	conn  conn
	limit int
}

func (c *failedCmd) define(fs *flag.FlagSet, e *env) {
	c.conn.define(fs, e)
	fs.Var(newIntFlag(&c.limit, failedDefaultLimit, 1, failedMaxLimit), "n",
		"list at most `N` jobs, most recently failed first")
}

func (c *failedCmd) validate(args []string, e *env) error {
	if err := noArgs(args); err != nil {
		return err
	}
	return c.conn.validate(e)
}

func (c *failedCmd) run(ctx context.Context, e *env) error {
	db, err := c.conn.open(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	jobs, err := pgq.NewQueries(db, c.conn.queryOpts()...).ListFailed(ctx, c.limit)
	if err != nil {
		return schemaHint(err, &c.conn.naming)
	}
	if len(jobs) == 0 {
		fmt.Fprintln(e.stdout, "no failed (held) jobs")
		return nil
	}
	tw := newTable(e.stdout)
	fmt.Fprintln(tw, "ID\tENTRYPOINT\tPRIORITY\tATTEMPTS\tFAILED AT\tERROR")
	for _, j := range jobs {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%s\t%s\n", j.ID, j.Entrypoint, j.Priority, j.Attempts,
			formatTime(j.Updated), oneLineMessage(j.LastError))
	}
	return tw.Flush()
}

// requeueCmd is `pgq requeue IDS...`.
type requeueCmd struct {
	conn conn
	ids  []pgq.JobID
}

func (c *requeueCmd) define(fs *flag.FlagSet, e *env) { c.conn.define(fs, e) }

func (c *requeueCmd) validate(args []string, e *env) (err error) {
	if c.ids, err = parseJobIDs(args); err != nil {
		return err
	}
	return c.conn.validate(e)
}

func (c *requeueCmd) run(ctx context.Context, e *env) error {
	db, err := c.conn.open(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	done, err := pgq.NewQueries(db, c.conn.queryOpts()...).Requeue(ctx, c.ids)
	if err != nil {
		return schemaHint(err, &c.conn.naming)
	}
	for _, id := range done {
		fmt.Fprintf(e.stdout, "requeued %d\n", id)
	}
	var missed []pgq.JobID
	for _, id := range c.ids {
		if !slices.Contains(done, id) {
			missed = append(missed, id)
		}
	}
	if len(missed) > 0 {
		return fmt.Errorf("not requeued (not held as failed, or no such job): %s", joinIDs(missed))
	}
	return nil
}

// cancelCmd is `pgq cancel IDS...`.
type cancelCmd struct {
	conn conn
	ids  []pgq.JobID
}

func (c *cancelCmd) define(fs *flag.FlagSet, e *env) { c.conn.define(fs, e) }

func (c *cancelCmd) validate(args []string, e *env) (err error) {
	if c.ids, err = parseJobIDs(args); err != nil {
		return err
	}
	return c.conn.validate(e)
}

func (c *cancelCmd) run(ctx context.Context, e *env) error {
	db, err := c.conn.open(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	q := pgq.NewQueries(db, c.conn.queryOpts()...)
	if err := q.MarkJobAsCancelled(ctx, c.ids); err != nil {
		return schemaHint(err, &c.conn.naming)
	}
	// The log tells what became of each: canceled now (or before), finished
	// otherwise before, or never seen.
	st, err := q.JobStatus(ctx, c.ids)
	if err != nil {
		return schemaHint(err, &c.conn.naming)
	}
	var unknown, finished []string
	for _, id := range c.ids {
		switch s, ok := st[id]; {
		case !ok:
			unknown = append(unknown, strconv.FormatInt(int64(id), 10))
		case s == pgq.StatusCanceled:
			fmt.Fprintf(e.stdout, "canceled %d\n", id)
		default:
			finished = append(finished, fmt.Sprintf("%d (%s)", id, s))
		}
	}
	var problems []string
	if len(finished) > 0 {
		problems = append(problems, "already finished: "+strings.Join(finished, ", "))
	}
	if len(unknown) > 0 {
		problems = append(problems, "no such job: "+strings.Join(unknown, ", "))
	}
	if len(problems) > 0 {
		return fmt.Errorf("not canceled: %s", strings.Join(problems, "; "))
	}
	return nil
}
