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
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/lib/pq"
)

// Callbacks receive what the listener sees. They run on the listener's
// goroutines and must not block for long. Nil ones are skipped.
type Callbacks struct {
	Notify       func(payload string) // one notification on the channel
	Connected    func()               // LISTEN is in place (first time or after a reconnect), and proven by Echo
	Disconnected func()               // the LISTEN connection was lost; reconnecting

	// Echo, when set, proves that notifications reach the listener after
	// each LISTEN, before Connected: it must send a health_check_event
	// with id on the channel from another connection (the caller's pool).
	// Behind a transaction-mode pooler LISTEN succeeds, but the server
	// connection that ran it is handed to other clients, and its
	// notifications never reach the listener: the echo does not come
	// back within EchoTimeout, the listener says so once at WARN, calls
	// Deaf, stops listening and tries again later.
	Echo func(ctx context.Context, id uuid.UUID) error
	Deaf func() // the echo did not come back: notifications do not arrive
}

func (cb Callbacks) deaf() {
	if cb.Deaf != nil {
		cb.Deaf()
	}
}

func (cb Callbacks) connected() {
	if cb.Connected != nil {
		cb.Connected()
	}
}

func (cb Callbacks) disconnected() {
	if cb.Disconnected != nil {
		cb.Disconnected()
	}
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
	// deafRetry is how long a listener whose echo did not come back
	// waits before it tries again (doubling up to maxDeafRetry): a
	// transaction-mode pooler does not go away by itself, and each try
	// leaves a LISTEN on one of its server connections until the
	// UNLISTEN that follows.
	deafRetry    = 30 * time.Second
	maxDeafRetry = 10 * time.Minute
)

// EchoTimeout is how long a listener waits for its echo after LISTEN (see
// Callbacks.Echo). On a direct or session-mode connection the echo takes
// milliseconds; through a transaction-mode pooler it never comes. A
// variable for the tests.
var EchoTimeout = 3 * time.Second

// errDeaf says that a listener's echo did not come back.
var errDeaf = errors.New("LISTEN succeeded but the listener's own notification did not come back")

// PoolerEchoHint is the advice logged when the echo does not come back.
const PoolerEchoHint = "a transaction-mode pooler (such as PgBouncer with pool_mode=transaction) hands the listening server connection " +
	"to other clients, so notifications never arrive: pass pgq.WithListenDSN with a DSN that reaches the server directly " +
	"or through a session-mode pooler; meanwhile pgq polls"

// isEcho reports whether payload is the health_check_event with id.
func isEcho(payload string, id uuid.UUID) bool {
	var ev struct {
		Type string `json:"type"`
		ID   string `json:"id"`
	}
	return json.Unmarshal([]byte(payload), &ev) == nil && ev.Type == "health_check_event" && ev.ID == id.String()
}

// Driver returns db's driver, unwrapped from wrappers that have an Unwrap
// method (such as pgq.Open's).
func Driver(db *sql.DB) driver.Driver {
	d := db.Driver()
	for {
		u, ok := d.(interface{ Unwrap() driver.Driver })
		if !ok {
			return d
		}
		d = u.Unwrap()
	}
}

// New picks the listener for db: a dedicated connection on dsn when one is
// given (lib/pq's Listener for a lib/pq pool, pgx otherwise), or a
// connection borrowed from a pgx pool. It returns nil when neither is
// possible (a lib/pq pool without a DSN): then the caller relies on polling.
// The listener's connection carries appName as its application_name (a
// borrowed one only while it is borrowed), so that pg_stat_activity shows
// who listens.
func New(db *sql.DB, dsn, channel, appName string, logger *slog.Logger) Listener {
	drv := Driver(db)
	_, isPQ := drv.(*pq.Driver)
	_, isPgx := drv.(*stdlib.Driver)
	switch {
	case dsn != "" && isPQ:
		return &pqListener{dsn: withAppName(dsn, appName), channel: channel, logger: logger}
	case dsn != "":
		return &pgxListener{channel: channel, logger: logger, connect: func(ctx context.Context) (*pgx.Conn, func(), error) {
			cfg, err := pgx.ParseConfig(dsn)
			if err != nil {
				return nil, nil, err
			}
			if appName != "" {
				cfg.RuntimeParams["application_name"] = appName
			}
			c, err := pgx.ConnectConfig(ctx, cfg)
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
		return &pgxListener{channel: channel, logger: logger, connect: borrow(db, appName)}
	}
	return nil
}

// withAppName sets application_name in a DSN for lib/pq: a URL gets the
// query parameter; a keyword/value string gets the keyword appended (lib/pq
// takes the last value of a repeated keyword).
func withAppName(dsn, appName string) string {
	if appName == "" {
		return dsn
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return dsn // lib/pq reports the bad DSN when it connects
		}
		q := u.Query()
		q.Set("application_name", appName)
		u.RawQuery = q.Encode()
		return u.String()
	}
	quoted := "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(appName) + "'"
	return strings.TrimSpace(dsn + " application_name=" + quoted)
}

// borrow takes a connection from a pgx database/sql pool for as long as the
// listener needs it.
func borrow(db *sql.DB, appName string) func(ctx context.Context) (*pgx.Conn, func(), error) {
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
		if appName != "" {
			if _, err := pc.Exec(ctx, "SELECT set_config('application_name', $1, false)", appName); err != nil {
				conn.Close()
				return nil, nil, err
			}
		}
		release := func() {
			if !pc.IsClosed() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_, uerr := pc.Exec(ctx, "UNLISTEN *; RESET application_name")
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

// PoolerHint is the advice logged when LISTEN itself fails: the usual
// cause is a transaction-mode pooler between pgq and the server.
const PoolerHint = "behind a transaction-mode pooler LISTEN cannot work: " +
	"pass pgq.WithListenDSN with a DSN that reaches the server directly or through a session-mode pooler"

// failures logs a listener's failures to connect or to LISTEN: the first
// of a run at WARN, the ones that follow at DEBUG, so that a listener that
// cannot work says so once rather than at every retry.
type failures struct {
	logger  *slog.Logger
	channel string
	n       int // failures since LISTEN last worked
}

func (f *failures) fail(msg string, err error, wait time.Duration, hint string) {
	f.n++
	args := []any{"channel", f.channel, "err", err, "in", wait}
	if f.n > 1 {
		f.logger.Debug(msg, append(args, "failures", f.n)...)
		return
	}
	if hint != "" {
		args = append(args, "hint", hint)
	}
	f.logger.Warn(msg+"; polling meanwhile", args...)
}

func (f *failures) ok() { f.n = 0 }

func (l *pgxListener) Run(ctx context.Context, cb Callbacks) error {
	wait := minReconnect
	fails := failures{logger: l.logger, channel: l.channel}
	deafWait := deafRetry
	for ctx.Err() == nil {
		listened, listenErr, err := l.session(ctx, cb)
		if ctx.Err() != nil {
			break
		}
		switch {
		case errors.Is(err, errDeaf):
			fails.fail("pgq: listener's notifications do not arrive; retrying", err, deafWait, PoolerEchoHint)
			cb.deaf()
			wait = deafWait
			deafWait = min(2*deafWait, maxDeafRetry)
		case listened:
			// The connection worked: reconnect quickly after a drop.
			wait = minReconnect
			fails.ok()
			cb.disconnected()
			l.logger.Warn("pgq: listener connection lost; reconnecting", "channel", l.channel, "err", err, "in", wait)
		case listenErr:
			fails.fail("pgq: LISTEN failed; retrying", err, wait, PoolerHint)
		default:
			fails.fail("pgq: listener cannot connect; retrying", err, wait, "")
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		if !errors.Is(err, errDeaf) {
			wait = min(wait*2, maxReconnect)
		} else {
			wait = minReconnect
		}
	}
	return nil
}

// session runs one connection until it fails or ctx ends. listened reports
// whether LISTEN succeeded on it, listenErr that LISTEN itself failed.
func (l *pgxListener) session(ctx context.Context, cb Callbacks) (listened, listenErr bool, err error) {
	conn, release, err := l.connect(ctx)
	if err != nil {
		return false, false, err
	}
	defer release()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{l.channel}.Sanitize()); err != nil {
		return false, !conn.IsClosed(), err
	}
	if err := l.echo(ctx, conn, cb); err != nil {
		return false, false, err
	}
	cb.connected()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return true, false, err
		}
		if n.Channel == l.channel && cb.Notify != nil {
			cb.Notify(n.Payload)
		}
	}
}

// echo proves that notifications reach conn (see Callbacks.Echo); on
// errDeaf it has run UNLISTEN. Notifications that arrive meanwhile are
// handed on.
func (l *pgxListener) echo(ctx context.Context, conn *pgx.Conn, cb Callbacks) error {
	if cb.Echo == nil {
		return nil
	}
	id := uuid.New()
	if err := sendEcho(ctx, cb, id, l.logger, l.channel); err != nil {
		return nil // unproven, not disproven: the health checks go on
	}
	wctx, cancel := context.WithTimeout(ctx, EchoTimeout)
	defer cancel()
	for {
		n, err := conn.WaitForNotification(wctx)
		if err != nil {
			if ctx.Err() != nil || wctx.Err() == nil {
				return err // the connection failed, or Run ends
			}
			uctx, cancel := context.WithTimeout(ctx, time.Second)
			_, _ = conn.Exec(uctx, "UNLISTEN "+pgx.Identifier{l.channel}.Sanitize())
			cancel()
			return errDeaf
		}
		if n.Channel != l.channel {
			continue
		}
		if isEcho(n.Payload, id) {
			return nil
		}
		if cb.Notify != nil {
			cb.Notify(n.Payload)
		}
	}
}

// sendEcho sends the echo within EchoTimeout; an error is logged at DEBUG.
func sendEcho(ctx context.Context, cb Callbacks, id uuid.UUID, logger *slog.Logger, channel string) error {
	sctx, cancel := context.WithTimeout(ctx, EchoTimeout)
	defer cancel()
	err := cb.Echo(sctx, id)
	if err != nil && ctx.Err() == nil {
		logger.Debug("pgq: listener could not send its echo; listening unproven", "channel", channel, "err", err)
	}
	return err
}

type pqListener struct {
	dsn     string
	channel string
	logger  *slog.Logger
	ping    time.Duration // how often to Ping; pingInterval when 0
}

func (l *pqListener) Run(ctx context.Context, cb Callbacks) error {
	deafs := failures{logger: l.logger, channel: l.channel}
	wait := deafRetry
	for ctx.Err() == nil {
		if !l.session(ctx, cb) {
			return nil
		}
		deafs.fail("pgq: listener's notifications do not arrive; retrying", errDeaf, wait, PoolerEchoHint)
		cb.deaf()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		wait = min(2*wait, maxDeafRetry)
	}
	return nil
}

// session runs one pq.Listener until ctx ends (false) or its echo does
// not come back (true: it has run UNLISTEN and closed the listener).
func (l *pqListener) session(ctx context.Context, cb Callbacks) (deaf bool) {
	// pq calls back on its own goroutine, one event at a time.
	connFails := failures{logger: l.logger, channel: l.channel}
	pl := pq.NewListener(l.dsn, minReconnect, maxReconnect, func(ev pq.ListenerEventType, err error) {
		switch ev {
		case pq.ListenerEventConnected, pq.ListenerEventReconnected:
			connFails.ok()
		case pq.ListenerEventDisconnected:
			cb.disconnected()
			l.logger.Warn("pgq: listener connection lost; reconnecting", "channel", l.channel, "err", err)
		case pq.ListenerEventConnectionAttemptFailed:
			connFails.fail("pgq: listener cannot connect; retrying", err, 0, "")
		}
	})
	// Closing the listener when ctx ends also unblocks a Listen that waits
	// for a first connection. Once closed, pq's own goroutine ends by
	// closing pl.Notify.
	//
	// pl.Ping and pl.Unlisten wait for the server's reply while holding
	// the listener's lock (which Close takes too), and that reply comes
	// after every notification already on the connection, which pq hands
	// over only as pl.Notify is read (it buffers 64). So they run on
	// goroutines of their own (calls) while this one goes on reading
	// pl.Notify, and the end of the session reads it until pq closes it.
	// Called from here, a Ping during a burst of notifications deadlocked
	// the listener: no more notifications, a Run that never returned, and
	// a server process blocked writing to a client that no longer read,
	// which blocks every DROP DATABASE of the cluster.
	var calls sync.WaitGroup
	unlisten := false // set when the session ends deaf
	closed := make(chan struct{})
	stopClose := context.AfterFunc(ctx, func() {
		_ = pl.Close()
		close(closed)
	})
	defer func() {
		if stopClose() {
			calls.Go(func() {
				if unlisten {
					_ = pl.Unlisten(l.channel)
				}
				_ = pl.Close()
				close(closed)
			})
		}
		for range pl.Notify {
		}
		<-closed
		calls.Wait()
	}()

	// Listen returns once LISTEN is in place (it waits for the first
	// connection); it fails only on a server error, so keep trying.
	wait := minReconnect
	listenFails := failures{logger: l.logger, channel: l.channel}
	for {
		err := pl.Listen(l.channel)
		if err == nil || errors.Is(err, pq.ErrChannelAlreadyOpen) {
			break
		}
		if ctx.Err() != nil {
			return false
		}
		listenFails.fail("pgq: LISTEN failed; retrying", err, wait, PoolerHint)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		wait = min(wait*2, maxReconnect)
	}
	every := l.ping
	if every <= 0 {
		every = pingInterval
	}
	ping := time.NewTicker(every)
	defer ping.Stop()
	var pinged chan struct{} // closed when the Ping in flight returns; nil when none
	// An echo in flight: its id, and a timer for its deadline.
	var echoID uuid.UUID
	var echoTimer <-chan time.Time
	prove := func() {
		if cb.Echo == nil {
			cb.connected()
			return
		}
		id := uuid.New()
		if sendEcho(ctx, cb, id, l.logger, l.channel) != nil {
			cb.connected() // unproven, not disproven: the health checks go on
			return
		}
		echoID, echoTimer = id, time.After(EchoTimeout)
	}
	prove()
	for {
		select {
		case <-ctx.Done():
			return false
		case n, ok := <-pl.Notify:
			if !ok {
				return false
			}
			if n == nil {
				// pq.Listener reconnected and listens again: notifications
				// may have been missed meanwhile.
				prove()
				continue
			}
			if n.Channel != l.channel {
				continue
			}
			if echoTimer != nil && isEcho(n.Extra, echoID) {
				echoTimer = nil
				cb.connected()
				continue
			}
			if cb.Notify != nil {
				cb.Notify(n.Extra)
			}
		case <-echoTimer:
			unlisten = true
			return true
		case <-ping.C:
			// Finds a connection that died silently; pq.Listener then
			// reconnects. One Ping at a time, on a goroutine (see above).
			if pinged == nil {
				p := make(chan struct{})
				pinged = p
				calls.Go(func() {
					_ = pl.Ping()
					close(p)
				})
			}
		case <-pinged:
			pinged = nil
		}
	}
}
