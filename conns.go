package pgq

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

// A lane is one connection of the caller's pool that one part of a worker,
// watcher or scheduler holds for as long as it runs: its statements never
// wait for a connection that the application's own traffic holds, and
// never land on a connection the pool has just opened (a new server
// process, its caches cold, its prepared statements gone), however the
// pool is sized and however busy it is. A connection that fails is given
// back and another taken on the next statement; a statement that failed
// because its connection was already dead before it was sent is retried
// once at once on a new one.
//
// A lane of a pool too small to spare the connection (SetMaxOpenConns)
// runs its statements on the pool like any other caller.
type lane struct {
	db     *sql.DB
	names  sqlname.Names
	pin    bool
	pooled sqlname.DBTX // db with names rewritten, for a lane that does not pin

	// appName, when set, is the application_name of the lane's
	// connection while the lane holds it (see named).
	appName string
	// connectTimeout, when set, bounds each wait for a connection (see
	// connectWithin).
	connectTimeout time.Duration

	mu   sync.Mutex // one statement (or transaction) at a time
	conn *sql.Conn  // nil until the first statement, and after a failure
	rdb  sqlname.DBTX
}

// session is what a lane's statements run on: db for single statements
// (names rewritten), begin for transactions.
type session struct {
	db    sqlname.DBTX
	begin func(context.Context, *sql.TxOptions) (*sql.Tx, error)
}

func newLane(db *sql.DB, names sqlname.Names, pin bool) *lane {
	return &lane{db: db, names: names, pin: pin, pooled: wrapDB(names, db)}
}

// named makes the lane's connection carry appName as its
// application_name while the lane holds it, so that pg_stat_activity shows
// whose it is; a lane that does not pin a connection cannot be named.
func (l *lane) named(appName string) *lane {
	l.appName = appName
	return l
}

// connectWithin bounds each wait of the lane for a connection from the
// pool (a new one included) to d: a statement that cannot get one in that
// time fails, and the next one tries again.
func (l *lane) connectWithin(d time.Duration) *lane {
	l.connectTimeout = d
	return l
}

// do runs f on the lane's connection, taking one first if it has none.
func (l *lane) do(ctx context.Context, f func(s session) error) error {
	if !l.pin {
		return hintPooler(f(session{db: l.pooled, begin: l.db.BeginTx}))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if err := l.connectLocked(ctx); err != nil {
			return err
		}
		err := f(session{db: l.rdb, begin: l.conn.BeginTx})
		if err == nil {
			return nil
		}
		if l.broken(err) {
			_ = l.conn.Close()
			l.conn, l.rdb = nil, nil
			// A connection that died while it sat idle (a server
			// restart, a terminated backend) fails the next statement
			// before sending it: that one is safe to run again. After a
			// restart the pool's idle connections are all dead, and the
			// next ones it hands out fail the same way: go through them
			// now, rather than one per statement (a heartbeat a second
			// stayed behind for seconds, and its jobs went stale).
			if attempt < maxDeadConns && ctx.Err() == nil && unsent(err) {
				continue
			}
		}
		return hintPooler(err)
	}
}

// maxDeadConns bounds the dead connections one statement of a lane goes
// through before it gives up (see do): about what a pool holds idle.
const maxDeadConns = 64

// take gets the lane its connection now, if it has none, so that a lane
// used first while the program holds all of a limited pool's connections
// does not wait for them; a failure is left for the first statement to
// retry.
func (l *lane) take(ctx context.Context) {
	if !l.pin {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_ = l.connectLocked(ctx)
}

// connectLocked takes a connection from the pool if the lane has none.
// l.mu is held.
func (l *lane) connectLocked(ctx context.Context) error {
	if l.conn != nil {
		return nil
	}
	c, err := l.poolConn(ctx)
	if err != nil {
		return err
	}
	if l.appName != "" {
		// A failure here shows on the statement that follows.
		_ = dbgen.New().SetApplicationName(ctx, c, l.appName)
	}
	l.conn, l.rdb = c, wrapDB(l.names, c)
	return nil
}

// poolConn takes a connection from the pool, waiting at most
// connectTimeout when that is set. The wait ends then even if the
// driver's does not (lib/pq waits for a new connection's server to answer
// whatever the context says): a connection that comes later goes back to
// the pool, and the goroutine that waits for it ends when the driver
// returns.
func (l *lane) poolConn(ctx context.Context) (*sql.Conn, error) {
	if l.connectTimeout <= 0 {
		return l.db.Conn(ctx)
	}
	connCtx, cancel := context.WithTimeout(ctx, l.connectTimeout)
	defer cancel()
	type result struct {
		c   *sql.Conn
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := l.db.Conn(connCtx)
		got <- result{c, err}
	}()
	var err error
	select {
	case r := <-got:
		if r.err == nil || ctx.Err() != nil || connCtx.Err() == nil {
			return r.c, r.err
		}
		err = r.err
	case <-connCtx.Done():
		go func() {
			if r := <-got; r.c != nil {
				_ = r.c.Close()
			}
		}()
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		err = connCtx.Err()
	}
	return nil, fmt.Errorf("pgq: no connection within %v: %w", l.connectTimeout, err)
}

// unsent reports whether err says the statement never reached the server.
func unsent(err error) bool {
	return errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone)
}

// broken reports whether the lane's connection can no longer be used after
// a statement failed with err. l.mu is held.
func (l *lane) broken(err error) bool {
	if unsent(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// A canceled statement may leave the connection mid-protocol:
		// take a fresh one rather than find out.
		return true
	}
	valid := true
	_ = l.conn.Raw(func(dc any) error {
		switch c := dc.(type) {
		case driver.Validator: // lib/pq
			valid = c.IsValid()
		case *stdlib.Conn:
			valid = !c.Conn().IsClosed()
		}
		return nil
	})
	return !valid
}

// close gives the lane's connection back to the pool.
func (l *lane) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		if l.appName != "" {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if err := dbgen.New().ResetApplicationName(ctx, l.conn); err != nil {
				// A connection in an unknown state must not go back to
				// the pool.
				_ = l.conn.Raw(func(any) error { return driver.ErrBadConn })
			}
			cancel()
		}
		_ = l.conn.Close()
		l.conn, l.rdb = nil, nil
	}
}

// canPin reports whether db may spare want connections for lanes, and
// logs once, when it may not, why the lanes share the pool instead. A pool
// without a limit always may; a limited one must keep at least one
// connection for everything else.
func canPin(db *sql.DB, want int, who string, logger *slog.Logger) bool {
	limit := db.Stats().MaxOpenConnections
	if limit == 0 || limit > want {
		return true
	}
	logger.Warn("pgq: the pool's SetMaxOpenConns is too small for "+who+" to hold connections of its own; "+
		"its statements queue for the pool's connections with everyone else's",
		"max_open_conns", limit, "wanted", want+1)
	return false
}
