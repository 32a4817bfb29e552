package cli

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/pgq-dev/pgq"
)

// Defaults and limits of `pgq dashboard`.
const (
	dashboardDefaultInterval = 2 * time.Second
	dashboardMinInterval     = 100 * time.Millisecond
	dashboardDefaultErrors   = 5
)

// clearScreen moves the cursor home and clears the terminal (ANSI).
const clearScreen = "\x1b[H\x1b[2J"

// dashboardStatuses are the columns of the recent-activity table, in the
// enum's order.
var dashboardStatuses = []pgq.Status{
	pgq.StatusQueued, pgq.StatusPicked, pgq.StatusSuccessful, pgq.StatusException,
	pgq.StatusCanceled, pgq.StatusDeleted, pgq.StatusFailed,
}

// dashboardCmd is `pgq dashboard`.
type dashboardCmd struct {
	conn     conn
	interval time.Duration
	once     bool
	errors   int
}

func (c *dashboardCmd) define(fs *flag.FlagSet, e *env) {
	c.conn.define(fs, e)
	c.interval = dashboardDefaultInterval
	fs.Var(&durationFlag{&c.interval}, "interval", "refresh every `interval`, e.g. 500ms, 2s, 1m")
	fs.BoolVar(&c.once, "once", false, "print the tables once and exit")
	fs.Var(newIntFlag(&c.errors, dashboardDefaultErrors, 0, pgq.MaxStatsErrors), "errors",
		"show the latest `N` errors")
}

func (c *dashboardCmd) validate(args []string, e *env) error {
	if err := noArgs(args); err != nil {
		return err
	}
	if !c.once && c.interval < dashboardMinInterval {
		return usagef("--interval %v is too short: want at least %v", c.interval, dashboardMinInterval)
	}
	return c.conn.validate(e)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (c *dashboardCmd) run(ctx context.Context, e *env) error {
	db, err := c.conn.open(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	q := pgq.NewQueries(db, c.conn.queryOpts()...)
	tty := isTerminal(e.stdout)
	tick := time.NewTicker(c.interval)
	defer tick.Stop()
	for frame := 0; ; frame++ {
		var buf bytes.Buffer
		s, err := q.Stats(ctx, pgq.WithStatsErrors(c.errors))
		switch {
		case err != nil && ctx.Err() != nil && !c.once:
			return nil // Ctrl-C
		case err != nil && (frame == 0 || c.once):
			return schemaHint(err, &c.conn.naming)
		case err != nil:
			// A live view outlasts a database restart: say so and retry.
			fmt.Fprintf(&buf, "pgq dashboard  %s  (refreshing every %v; Ctrl-C to quit)\n\n"+
				"cannot read the queue: %s\nretrying…\n",
				formatTime(time.Now()), c.interval, oneLine(err.Error()))
		default:
			title := "pgq dashboard  " + formatTime(s.At)
			if !c.once {
				title += fmt.Sprintf("  (refreshing every %v; Ctrl-C to quit)", c.interval)
			}
			renderStats(&buf, title, s, c.errors)
		}
		if tty && !c.once {
			io.WriteString(e.stdout, clearScreen)
		} else if frame > 0 {
			io.WriteString(e.stdout, "\n")
		}
		if _, err := e.stdout.Write(buf.Bytes()); err != nil {
			return err
		}
		if c.once {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// renderStats writes the title line, then the queue, recent activity and
// error tables. Their columns are fixed so that scripts can read them.
func renderStats(w io.Writer, title string, s pgq.Stats, errors int) {
	fmt.Fprintln(w, title)
	var total int64
	for _, d := range s.Queue {
		total += d.Count
	}
	fmt.Fprintf(w, "\nQUEUE: %d %s", total, plural(total, "job", "jobs"))
	if s.OldestQueued > 0 {
		fmt.Fprintf(w, ", the oldest due one waiting %s", formatAge(s.OldestQueued))
	}
	fmt.Fprintln(w)
	if len(s.Queue) > 0 {
		tw := newTable(w)
		fmt.Fprintln(tw, "ENTRYPOINT\tPRIORITY\tSTATUS\tJOBS\tOLDEST WAIT")
		for _, d := range s.Queue {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\n", d.Entrypoint, d.Priority, d.Status, d.Count, formatAge(d.OldestWait))
		}
		tw.Flush()
	}

	if len(s.Paused) > 0 {
		fmt.Fprintf(w, "\nPAUSED: %d %s (pgq's workers do not claim their jobs; `pgq resume ENTRYPOINT`)\n",
			len(s.Paused), plural(len(s.Paused), "entrypoint", "entrypoints"))
		tw := newTable(w)
		fmt.Fprintln(tw, "ENTRYPOINT\tSINCE")
		for _, p := range s.Paused {
			fmt.Fprintf(tw, "%s\t%s\n", p.Entrypoint, formatTime(p.Since))
		}
		tw.Flush()
	}

	fmt.Fprintf(w, "\nLAST MINUTE: %d finished, %.2f jobs/s\n", s.Finished, s.JobsPerSecond)
	if len(s.Recent) > 0 {
		tw := newTable(w)
		head := []string{"ENTRYPOINT"}
		for _, st := range dashboardStatuses {
			head = append(head, strings.ToUpper(string(st)))
		}
		fmt.Fprintln(tw, strings.Join(head, "\t"))
		var order []string
		counts := map[string]map[pgq.Status]int64{}
		for _, r := range s.Recent {
			if counts[r.Entrypoint] == nil {
				counts[r.Entrypoint] = map[pgq.Status]int64{}
				order = append(order, r.Entrypoint)
			}
			counts[r.Entrypoint][r.Status] += r.Count
		}
		for _, ep := range order {
			row := []string{ep}
			for _, st := range dashboardStatuses {
				row = append(row, fmt.Sprint(counts[ep][st]))
			}
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
		tw.Flush()
	}

	renderWorkers(w, s)

	if errors == 0 {
		return
	}
	fmt.Fprintf(w, "\nLAST ERRORS: %d\n", len(s.Errors))
	if len(s.Errors) > 0 {
		tw := newTable(w)
		fmt.Fprintln(tw, "TIME\tJOB\tENTRYPOINT\tSTATUS\tERROR")
		for _, x := range s.Errors {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", formatTime(x.Time), x.JobID, x.Entrypoint, x.Status, oneLineMessage(x.Message))
		}
		tw.Flush()
	}
}

// renderWorkers writes the workers seen on the queue and whether each
// listens: one that does not polls (a pgq worker says why in its log), or
// is a PGQueuer worker holding jobs.
func renderWorkers(w io.Writer, s pgq.Stats) {
	deaf := 0
	for _, x := range s.Workers {
		if !x.Listening {
			deaf++
		}
	}
	fmt.Fprintf(w, "\nWORKERS: %d seen", len(s.Workers))
	if deaf > 0 {
		fmt.Fprintf(w, ", %d not listening (polling, or PGQueuer's)", deaf)
	}
	fmt.Fprintf(w, "; %d %s listening\n", s.Watchers, plural(s.Watchers, "watcher", "watchers"))
	if len(s.Workers) == 0 {
		return
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "WORKER\tRUNNING\tLISTENING")
	for _, x := range s.Workers {
		listening := "yes"
		if !x.Listening {
			listening = "no"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", x.ID, x.Running, listening)
	}
	tw.Flush()
}

func plural[N int | int64](n N, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
