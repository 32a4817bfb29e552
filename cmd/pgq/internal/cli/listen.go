package cli

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/internal/dsn"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

// listenCloseTimeout bounds the goodbye to the server when listen stops.
const listenCloseTimeout = 5 * time.Second

// listenCmd is `pgq listen`.
type listenCmd struct {
	conn conn
}

func (c *listenCmd) define(fs *flag.FlagSet, e *env) { c.conn.define(fs, e) }

func (c *listenCmd) validate(args []string, e *env) error {
	if err := noArgs(args); err != nil {
		return err
	}
	return c.conn.validate(e)
}

func (c *listenCmd) run(ctx context.Context, e *env) error {
	cfg, err := pgx.ParseConfig(c.conn.DSN)
	if err != nil {
		return dsn.RedactError(fmt.Errorf("cannot connect to PostgreSQL (DSN from %s): %w", c.conn.source, err), c.conn.DSN)
	}
	cctx, cancel := context.WithTimeout(ctx, pingTimeout)
	pc, err := pgx.ConnectConfig(cctx, cfg)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return dsn.RedactError(fmt.Errorf("cannot connect to PostgreSQL (DSN from %s): %w", c.conn.source, err), c.conn.DSN)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), listenCloseTimeout)
		defer cancel()
		_ = pc.Close(cctx)
	}()

	channel := sqlname.Names{Prefix: c.conn.Prefix}.Channel()
	if _, err := pc.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return fmt.Errorf("LISTEN %s: %w", channel, err)
	}
	if isTerminal(e.stderr) {
		fmt.Fprintf(e.stderr, "listening on channel %s (Ctrl-C to stop)\n", channel)
	}
	for {
		n, err := pc.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil // Ctrl-C: the normal end
			}
			return fmt.Errorf("lost the connection to PostgreSQL: %w", err)
		}
		if _, err := fmt.Fprintln(e.stdout, formatEvent(n.Payload)); err != nil {
			return err
		}
	}
}

// formatEvent prints a notification as one line: its type, what it is
// about, and when it was sent. A payload that is not a known event is
// printed as it is after "unparsed".
func formatEvent(payload string) string {
	ev, ok := pgq.ParseEvent(payload)
	if !ok {
		if strings.ContainsAny(payload, "\n\r") || !strconv.CanBackquote(payload) {
			payload = strconv.Quote(payload)
		}
		return "unparsed " + payload
	}
	var b strings.Builder
	b.WriteString(ev.Type)
	switch ev.Type {
	case pgq.EventTableChanged:
		fmt.Fprintf(&b, " operation=%s table=%s", orDash(ev.Operation), orDash(ev.Table))
	case pgq.EventCancellation:
		ids := make([]string, len(ev.IDs))
		for i, id := range ev.IDs {
			ids[i] = strconv.FormatInt(int64(id), 10)
		}
		fmt.Fprintf(&b, " ids=%s", orDash(strings.Join(ids, ",")))
	case pgq.EventHealthCheck:
		fmt.Fprintf(&b, " id=%s", ev.ID)
	}
	sent := "-"
	if !ev.SentAt.IsZero() {
		sent = ev.SentAt.UTC().Format(time.RFC3339Nano)
	}
	b.WriteString(" sent_at=" + sent)
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
