package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/pgq-dev/pgq/pgqweb"
)

// EnvWebAuth is the default of `pgq web --auth` (user:password).
const EnvWebAuth = "PGQ_WEB_AUTH"

// webShutdownTimeout bounds how long `pgq web` waits for open requests
// (live streams end at once) when it stops.
const webShutdownTimeout = 5 * time.Second

// webCmd is `pgq web`.
type webCmd struct {
	conn    conn
	addr    string
	actions bool
	auth    string
}

func (c *webCmd) define(fs *flag.FlagSet, e *env) {
	c.conn.define(fs, e)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "listen on `host:port` (another host than 127.0.0.1 exposes the dashboard)")
	fs.BoolVar(&c.actions, "allow-actions", false, "let operators cancel, delete and requeue jobs (needs --auth)")
	fs.StringVar(&c.auth, "auth", e.getenv(EnvWebAuth),
		"require HTTP basic auth with `user:password` on every page (default $"+EnvWebAuth+")")
}

func (c *webCmd) validate(args []string, e *env) error {
	if err := noArgs(args); err != nil {
		return err
	}
	if c.auth != "" {
		if u, p, ok := strings.Cut(c.auth, ":"); !ok || u == "" || p == "" {
			return usagef("--auth wants user:password, both non-empty")
		}
	}
	if c.actions && c.auth == "" {
		return usagef("--allow-actions needs --auth user:password (or $%s): actions change jobs", EnvWebAuth)
	}
	if _, _, err := net.SplitHostPort(c.addr); err != nil {
		return usagef("--addr %q: want host:port: %v", c.addr, err)
	}
	return c.conn.validate(e)
}

func (c *webCmd) run(ctx context.Context, e *env) error {
	db, err := c.conn.open(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", c.addr, err)
	}
	hctx, stop := context.WithCancel(ctx)
	defer stop()
	opts := []pgqweb.Option{pgqweb.WithContext(hctx), pgqweb.WithPrefix(c.conn.Prefix), pgqweb.WithSchema(c.conn.Schema)}
	if c.conn.DSN != "" {
		opts = append(opts, pgqweb.WithListenDSN(c.conn.DSN))
	}
	if c.actions {
		opts = append(opts, pgqweb.WithActions())
	}
	if u, p, ok := strings.Cut(c.auth, ":"); ok {
		opts = append(opts, pgqweb.WithBasicAuth(u, p))
	}
	srv := &http.Server{
		Handler:           pgqweb.Handler(db, opts...),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return hctx },
	}
	mode := "read-only"
	if c.actions {
		mode = "actions allowed"
	}
	fmt.Fprintf(e.stdout, "pgq web: http://%s/ (%s%s; Ctrl-C to stop)\n", ln.Addr(), mode, c.conn.describe())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	stop() // ends the live streams and the dashboard's background work
	sctx, cancel := context.WithTimeout(context.Background(), webShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	<-served
	return nil
}
