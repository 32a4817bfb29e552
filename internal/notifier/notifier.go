// Package notifier keeps one LISTEN connection open on one channel and
// hands every notification payload to a callback. It reconnects by itself
// and reports each (re)connection, after which the caller should assume
// notifications were missed and refresh its state.
//
// Three sources are supported: a lib/pq Listener on its own DSN, a pgx
// connection on its own DSN, and a connection borrowed from a pgx
// database/sql pool.
package notifier

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/lib/pq"
)

// Callbacks receive what the listener sees. They run on the listener's
// goroutine and must not block for long.
type Callbacks struct {
	Notify    func(payload string) // one notification on the channel
	Connected func()               // LISTEN is in place (first time or after a reconnect)
}

// Listener listens on one channel until its Run's ctx ends.
type Listener interface {
	Run(ctx context.Context, cb Callbacks) error
}

// Backoff bounds between reconnection attempts.
const (
	minReconnect = 10 * time.Millisecond
	maxReconnect = 2 * time.Second
	// pingInterval is how often an idle lib/pq listener checks its
	// connection.
	pingInterval = 30 * time.Second
)

// New picks the listener for db: a dedicated connection on dsn when one is
// given (lib/pq's Listener for a lib/pq pool, pgx otherwise), or a
// connection borrowed from a pgx pool. It returns nil when neither is
// possible (a lib/pq pool without a DSN): then the caller relies on polling.
func New(db *sql.DB, dsn, channel string, logger *slog.Logger) Listener {
	_, isPQ := db.Driver().(*pq.Driver)
	_, isPgx := db.Driver().(*stdlib.Driver)
	switch {
	case dsn != "" && isPQ:
		return &pqListener{dsn: dsn, channel: channel, logger: logger}
	case dsn != "":
		return &pgxListener{channel: channel, logger: logger, connect: func(ctx context.Context) (*pgx.Conn, func(), error) {
			c, err := pgx.Connect(ctx, dsn)
			if err != nil {
				return nil, nil, err
			}
			return c, func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				_ = c.Close(ctx)
			}, nil
		}}
	case isPgx:
		return &pgxListener{channel: channel, logger: logger, connect: borrow(db)}
	}
	return nil
}

// borrow takes a connection from a pgx database/sql pool for as long as the
// listener needs it.
func borrow(db *sql.DB) func(ctx context.Context) (*pgx.Conn, func(), error) {
	return func(ctx context.Context) (*pgx.Conn, func(), error) {
		conn, err := db.Conn(ctx)
		if err != nil {
			return nil, nil, err
		}
		var pc *pgx.Conn
		err = conn.Raw(func(dc any) error {
			sc, ok := dc.(*stdlib.Conn)
			if !ok {
				return fmt.Errorf("notifier: driver connection is %T, not pgx", dc)
			}
			pc = sc.Conn()
			return nil
		})
		if err != nil {
			conn.Close()
			return nil, nil, err
		}
		release := func() {
			if !pc.IsClosed() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_, uerr := pc.Exec(ctx, "UNLISTEN *")
				cancel()
				if uerr != nil {
					// A connection in an unknown state must not go back to
					// the pool.
					_ = conn.Raw(func(any) error { return sql.ErrConnDone })
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					_ = pc.Close(ctx)
					cancel()
				}
			}
			conn.Close()
		}
		return pc, release, nil
	}
}

type pgxListener struct {
	channel string
	logger  *slog.Logger
	connect func(ctx context.Context) (*pgx.Conn, func(), error)
}

func (l *pgxListener) Run(ctx context.Context, cb Callbacks) error {
	wait := minReconnect
	for ctx.Err() == nil {
		listened, err := l.session(ctx, cb)
		if ctx.Err() != nil {
			break
		}
		if listened {
			// The connection worked: reconnect quickly after a drop.
			wait = minReconnect
		}
		l.logger.Warn("pgq: listener connection lost; reconnecting", "channel", l.channel, "err", err, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		wait = min(wait*2, maxReconnect)
	}
	return nil
}

// session runs one connection until it fails or ctx ends. listened reports
// whether LISTEN succeeded on it.
func (l *pgxListener) session(ctx context.Context, cb Callbacks) (listened bool, err error) {
	conn, release, err := l.connect(ctx)
	if err != nil {
		return false, err
	}
	defer release()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{l.channel}.Sanitize()); err != nil {
		return false, err
	}
	cb.Connected()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return true, err
		}
		if n.Channel == l.channel {
			cb.Notify(n.Payload)
		}
	}
}

type pqListener struct {
	dsn     string
	channel string
	logger  *slog.Logger
}

func (l *pqListener) Run(ctx context.Context, cb Callbacks) error {
	pl := pq.NewListener(l.dsn, minReconnect, maxReconnect, func(ev pq.ListenerEventType, err error) {
		if err != nil {
			l.logger.Warn("pgq: listener event", "channel", l.channel, "event", ev, "err", err)
		}
	})
	// Closing the listener when ctx ends also unblocks a Listen that waits
	// for a first connection. Once closed, pq's own goroutine ends by
	// closing pl.Notify; draining it until then means no goroutine of the
	// listener outlives Run.
	closed := make(chan struct{})
	stopClose := context.AfterFunc(ctx, func() {
		_ = pl.Close()
		close(closed)
	})
	defer func() {
		if stopClose() {
			_ = pl.Close()
		} else {
			<-closed
		}
		for range pl.Notify {
		}
	}()

	// Listen returns once LISTEN is in place (it waits for the first
	// connection); it fails only on a server error, so keep trying.
	wait := minReconnect
	for {
		err := pl.Listen(l.channel)
		if err == nil || errors.Is(err, pq.ErrChannelAlreadyOpen) {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		l.logger.Warn("pgq: LISTEN failed; retrying", "channel", l.channel, "err", err, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		wait = min(wait*2, maxReconnect)
	}
	cb.Connected()
	ping := time.NewTicker(pingInterval)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case n, ok := <-pl.Notify:
			if !ok {
				return nil
			}
			if n == nil {
				// pq.Listener reconnected and listens again: notifications
				// may have been missed meanwhile.
				cb.Connected()
				continue
			}
			if n.Channel == l.channel {
				cb.Notify(n.Extra)
			}
		case <-ping.C:
			// Finds a connection that died silently; pq.Listener then
			// reconnects.
			_ = pl.Ping()
		}
	}
}
