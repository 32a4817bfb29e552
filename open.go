package pgq

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/pgq-dev/pgq/internal/notifier"
)

// Open opens a *sql.DB as sql.Open(driverName, dsn) does, and remembers dsn
// for pgq: a QueueManager or CompletionWatcher on the returned pool listens
// for notifications on a connection of its own to dsn, as WithListenDSN(dsn)
// would make it (an explicit WithListenDSN still wins).
//
// With lib/pq (driver "postgres") this is how workers and watchers get
// notifications in real time: a *sql.DB from sql.Open cannot tell pgq its
// DSN, and lib/pq's pooled connections cannot wait for notifications, so
// without Open or WithListenDSN they fall back to polling. With pgx (driver
// "pgx") sql.Open serves as well: pgq then borrows a pool connection for
// LISTEN.
//
// The pool behaves as sql.Open's; its connections are driverName's own
// (conn.Raw hands them over as usual). Only db.Driver() differs: it returns
// pgq's wrapper around driverName's driver, whose Unwrap method returns
// that driver. Like sql.Open, Open does not connect; use db.PingContext to
// check the DSN.
func Open(driverName, dsn string) (*sql.DB, error) {
	// sql.Open finds the registered driver without connecting.
	probe, err := sql.Open(driverName, dsn)
	if err != nil {
		return nil, fmt.Errorf("pgq: open: %w", err)
	}
	drv := probe.Driver()
	if err := probe.Close(); err != nil {
		return nil, fmt.Errorf("pgq: open %q: %w", driverName, err)
	}
	var c driver.Connector = dsnConnector{drv: drv, dsn: dsn}
	if dc, ok := drv.(driver.DriverContext); ok {
		if c, err = dc.OpenConnector(dsn); err != nil {
			return nil, fmt.Errorf("pgq: open %q: %w", driverName, err)
		}
	}
	return sql.OpenDB(&openConnector{Connector: c, drv: &openDriver{Driver: drv, dsn: dsn}}), nil
}

// openConnector is the connector of a pool made by Open: its Driver
// carries the DSN.
type openConnector struct {
	driver.Connector
	drv *openDriver
}

func (c *openConnector) Driver() driver.Driver { return c.drv }

// Close closes the driver's connector when it has a Close method; sql.DB's
// Close calls it.
func (c *openConnector) Close() error {
	if cl, ok := c.Connector.(io.Closer); ok {
		return cl.Close()
	}
	return nil
}

// openDriver is what db.Driver() returns for a pool made by Open.
type openDriver struct {
	driver.Driver
	dsn string
}

// Unwrap returns the driver that Open found under its driver name.
func (d *openDriver) Unwrap() driver.Driver { return d.Driver }

// dsnConnector is the connector of a driver that has no OpenConnector, as
// sql.Open makes it.
type dsnConnector struct {
	drv driver.Driver
	dsn string
}

func (c dsnConnector) Connect(context.Context) (driver.Conn, error) { return c.drv.Open(c.dsn) }
func (c dsnConnector) Driver() driver.Driver                        { return c.drv }

// openedDSN returns the DSN of a pool made by Open, or "".
func openedDSN(db *sql.DB) string {
	if db == nil {
		return ""
	}
	if d, ok := db.Driver().(*openDriver); ok {
		return d.dsn
	}
	return ""
}

// listenDSN returns the DSN a worker or watcher on db listens on:
// WithListenDSN's, else the one Open remembered, else "".
func (c *common) listenDSNFor(db *sql.DB) string {
	if c.listenDSN != "" {
		return c.listenDSN
	}
	return openedDSN(db)
}

// warnNoListener logs, once per worker run or watcher, that who cannot
// LISTEN on db and polls every interval instead, and how to fix it.
func warnNoListener(logger *slog.Logger, db *sql.DB, who string, every time.Duration) {
	logger.Warn("pgq: "+who+" cannot LISTEN on this *sql.DB and polls instead of waking on notifications",
		"driver", fmt.Sprintf("%T", notifier.Driver(db)), "every", every,
		"fix", `open the pool with pgq.Open("postgres", dsn) or pass pgq.WithListenDSN(dsn)`)
}

// maxAppName is the longest application_name PostgreSQL keeps
// (NAMEDATALEN - 1 bytes).
const maxAppName = 63

// workerAppName is the application_name of a worker's listener connection:
// `pgq dashboard` (Stats.Workers) finds listening workers by it. The
// channel keeps the queues of different prefixes apart. StatsWorkers in
// db/queries/stats.sql builds the same text.
func workerAppName(id uuid.UUID, channel string) string {
	return truncate("pgq worker "+id.String()+" "+channel, maxAppName)
}

// claimsAppName is the application_name of a worker's claim connection,
// the one it holds as long as it runs: Stats.Workers sees a worker that
// polls by it. StatsWorkers in db/queries/stats.sql matches the same text.
func claimsAppName(id uuid.UUID, channel string) string {
	return truncate("pgq claims "+id.String()+" "+channel, maxAppName)
}

// watcherAppName is the application_name of a CompletionWatcher's listener
// connection.
func watcherAppName(channel string) string {
	return truncate("pgq watcher "+channel, maxAppName)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] // ASCII: channel names are lower-case identifiers
	}
	return s
}
