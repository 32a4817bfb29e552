package cli

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/pgq-dev/pgq"
)

// listFlag collects a repeatable flag's values; commas separate several in
// one value.
type listFlag struct{ v []string }

func (f *listFlag) String() string {
	if f == nil || len(f.v) == 0 {
		return "[]"
	}
	return strings.Join(f.v, ",")
}

func (f *listFlag) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			return fmt.Errorf("want a schedule id or an entrypoint")
		}
		f.v = append(f.v, p)
	}
	return nil
}

// schedulesCmd is `pgq schedules [--remove ID|ENTRYPOINT ...]`.
type schedulesCmd struct {
	conn   conn
	remove listFlag
}

func (c *schedulesCmd) define(fs *flag.FlagSet, e *env) {
	c.conn.define(fs, e)
	fs.Var(&c.remove, "remove",
		"remove the schedules with this `ID` or ENTRYPOINT (repeatable; a number is an id; "+
			"arguments after it are removed too)")
}

func (c *schedulesCmd) validate(args []string, e *env) error {
	if len(c.remove.v) == 0 {
		if err := noArgs(args); err != nil {
			return usagef("unexpected argument %q: to remove schedules use --remove ID|ENTRYPOINT", args[0])
		}
	} else {
		for _, a := range args {
			if err := c.remove.Set(a); err != nil {
				return usagef("bad --remove argument %q: %v", a, err)
			}
		}
	}
	return c.conn.validate(e)
}

// target is one --remove value: a schedule id or an entrypoint.
type target struct {
	text string
	id   pgq.ScheduleID // 0 for an entrypoint
}

func (t target) matches(s pgq.ScheduleInfo) bool {
	if t.id != 0 {
		return s.ID == t.id
	}
	return s.Entrypoint == t.text
}

func (c *schedulesCmd) targets() []target {
	var ts []target
	for _, v := range c.remove.v {
		t := target{text: v}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
			t.id = pgq.ScheduleID(n)
		}
		ts = append(ts, t)
	}
	return ts
}

func (c *schedulesCmd) run(ctx context.Context, e *env) error {
	db, err := c.conn.open(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	q := pgq.NewQueries(db, c.conn.queryOpts()...)
	list, err := q.ListSchedules(ctx)
	if err != nil {
		return schemaHint(err, &c.conn.naming)
	}
	if len(c.remove.v) == 0 {
		if len(list) == 0 {
			fmt.Fprintln(e.stdout, "no schedules")
			return nil
		}
		tw := newTable(e.stdout)
		fmt.Fprintln(tw, "ID\tENTRYPOINT\tEXPRESSION\tSTATUS\tNEXT RUN\tLAST RUN")
		for _, s := range list {
			status := string(s.Status)
			if status == "" {
				status = "-"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Entrypoint, s.Expression, status,
				formatTime(s.NextRun), formatTime(s.LastRun))
		}
		return tw.Flush()
	}

	var ids []pgq.ScheduleID
	var eps, unmatched []string
	for _, t := range c.targets() {
		found := false
		for _, s := range list {
			found = found || t.matches(s)
		}
		switch {
		case !found:
			unmatched = append(unmatched, t.text)
		case t.id != 0:
			ids = append(ids, t.id)
		default:
			eps = append(eps, t.text)
		}
	}
	if len(ids)+len(eps) > 0 {
		n, err := q.RemoveSchedules(ctx, ids, eps)
		if err != nil {
			return schemaHint(err, &c.conn.naming)
		}
		for _, s := range list {
			for _, t := range c.targets() {
				if t.matches(s) {
					fmt.Fprintf(e.stdout, "removed schedule %d (%s, %q)\n", s.ID, s.Entrypoint, s.Expression)
					break
				}
			}
		}
		if n == 0 {
			fmt.Fprintln(e.stdout, "(they were removed meanwhile)")
		}
	}
	if len(unmatched) > 0 {
		return fmt.Errorf("no schedule has the id or entrypoint %s", strings.Join(unmatched, ", "))
	}
	return nil
}
