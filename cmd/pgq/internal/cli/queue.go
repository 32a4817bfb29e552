package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/pgq-dev/pgq"
)

// Limits of `pgq queue`.
const (
	maxQueueCount  = 1_000_000
	queueBatchSize = 1000 // jobs per EnqueueBatch statement with --count
)

// queueCmd is `pgq queue ENTRYPOINT [PAYLOAD]`.
type queueCmd struct {
	conn         conn
	entrypoint   string
	payload      []byte
	payloadArg   string
	hasPayload   bool
	priority     int
	dedupeKey    string
	executeAfter time.Duration
	headers      headerFlag
	count        int
}

func (c *queueCmd) define(fs *flag.FlagSet, e *env) {
	c.conn.define(fs, e)
	fs.Var(newIntFlag(&c.priority, 0, math.MinInt32, math.MaxInt32), "priority",
		"job `priority`: higher runs first")
	fs.StringVar(&c.dedupeKey, "dedupe-key", "",
		"dedupe `key`: refused while a job with the same key is queued or running")
	fs.Var(&durationFlag{&c.executeAfter}, "execute-after",
		"run no earlier than this `delay` from now, e.g. 30s, 5m, 1h30m")
	fs.Var(&c.headers, "header", "job header `key=value` (repeatable)")
	fs.Var(newIntFlag(&c.count, 1, 1, maxQueueCount), "count",
		"enqueue `N` identical jobs in batches of 1000 and print each id")
}

func (c *queueCmd) validate(args []string, e *env) error {
	if len(args) == 0 || args[0] == "" {
		return usagef("missing ENTRYPOINT: the name of the handler that runs the job")
	}
	c.entrypoint = args[0]
	if len(args) > 1 {
		c.payloadArg, c.hasPayload = args[1], true
	}
	if err := noArgs(args[min(2, len(args)):]); err != nil {
		return err
	}
	if c.dedupeKey != "" && c.count > 1 {
		return usagef("--dedupe-key cannot be used with --count %d: jobs with the same key exclude each other", c.count)
	}
	return c.conn.validate(e)
}

func (c *queueCmd) run(ctx context.Context, e *env) error {
	if c.hasPayload {
		c.payload = []byte(c.payloadArg)
		if c.payloadArg == "-" {
			b, err := io.ReadAll(io.LimitReader(e.stdin, pgq.MaxPayloadSize+1))
			if err != nil {
				return fmt.Errorf("reading the payload from standard input: %w", err)
			}
			if len(b) > pgq.MaxPayloadSize {
				// Only MaxPayloadSize+1 bytes were read: the size is unknown.
				return fmt.Errorf("the payload on standard input is larger than pgq.MaxPayloadSize (%d bytes)", pgq.MaxPayloadSize)
			}
			c.payload = b
		}
	}
	db, err := c.conn.open(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	q := pgq.NewQueries(db, c.conn.queryOpts()...)

	if c.count == 1 {
		opts := []pgq.EnqueueOption{pgq.WithPriority(int32(c.priority)), pgq.WithExecuteAfter(c.executeAfter)}
		if c.dedupeKey != "" {
			opts = append(opts, pgq.WithDedupeKey(c.dedupeKey))
		}
		if len(c.headers.m) > 0 {
			opts = append(opts, pgq.WithHeaders(c.headers.m))
		}
		id, err := q.Enqueue(ctx, c.entrypoint, c.payload, opts...)
		if err != nil {
			return schemaHint(err, &c.conn.naming)
		}
		fmt.Fprintln(e.stdout, id)
		return nil
	}

	job := pgq.NewJob{
		Entrypoint:   c.entrypoint,
		Payload:      c.payload,
		Priority:     int32(c.priority),
		ExecuteAfter: c.executeAfter,
		Headers:      c.headers.m,
	}
	done := 0
	for done < c.count {
		n := min(queueBatchSize, c.count-done)
		jobs := make([]pgq.NewJob, n)
		for i := range jobs {
			jobs[i] = job
		}
		ids, err := q.EnqueueBatch(ctx, jobs)
		if err != nil {
			err = schemaHint(err, &c.conn.naming)
			if done > 0 {
				return fmt.Errorf("after %d of %d jobs: %w", done, c.count, err)
			}
			return err
		}
		for _, id := range ids {
			fmt.Fprintln(e.stdout, id)
		}
		done += n
	}
	return nil
}
