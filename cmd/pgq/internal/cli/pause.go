package cli

import (
	"context"
	"flag"
	"fmt"

	"github.com/pgq-dev/pgq"
)

// pauseCmd is `pgq pause ENTRYPOINT` and `pgq resume ENTRYPOINT`.
type pauseCmd struct {
	conn       conn
	resume     bool
	entrypoint string
}

func (c *pauseCmd) define(fs *flag.FlagSet, e *env) { c.conn.define(fs, e) }

func (c *pauseCmd) validate(args []string, e *env) error {
	verb := "pause"
	if c.resume {
		verb = "resume"
	}
	if len(args) != 1 || args[0] == "" {
		return usagef("%s takes one ENTRYPOINT, got %d arguments", verb, len(args))
	}
	c.entrypoint = args[0]
	return c.conn.validate(e)
}

func (c *pauseCmd) run(ctx context.Context, e *env) error {
	db, err := c.conn.open(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	q := pgq.NewQueries(db, c.conn.queryOpts()...)
	if c.resume {
		if err := q.Resume(ctx, c.entrypoint); err != nil {
			return schemaHint(err, &c.conn.naming)
		}
		fmt.Fprintf(e.stdout, "resumed %s\n", c.entrypoint)
		return nil
	}
	if err := q.Pause(ctx, c.entrypoint); err != nil {
		return schemaHint(err, &c.conn.naming)
	}
	fmt.Fprintf(e.stdout, "paused %s\n", c.entrypoint)
	return nil
}
