package pgq

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/pgq-dev/pgq/internal/sqlname"
)

// common holds the settings shared by the schema functions, Queries,
// QueueManager and CompletionWatcher.
type common struct {
	names      sqlname.Names
	durability Durability
	noWidenID  bool
	listenDSN  string
	logger     *slog.Logger
	hooks      []EnqueueHook // Queries only
	err        error         // the first invalid option, reported by the constructor
}

func (c *common) setErr(err error) {
	if c.err == nil {
		c.err = err
	}
}

func newCommon() common {
	return common{logger: slog.New(slog.DiscardHandler)}
}

// SchemaOption configures Install, Upgrade, Uninstall and Verify.
type SchemaOption interface{ applySchema(*common) }

// Option configures NewQueries.
type Option interface{ applyQueries(*common) }

// ManagerOption configures NewQueueManager: WithPrefix, WithSchema,
// WithListenDSN, WithLogger, WithMiddleware, WithResources.
type ManagerOption interface{ applyManager(*managerConfig) }

type managerConfig struct {
	common
	resources  any
	middleware []Middleware
}

// Middleware wraps every handler of a QueueManager: for metrics, tracing,
// logging or recovering in your own way. The first one given is the
// outermost.
type Middleware func(next Handler) Handler

// MiddlewareOption is WithMiddleware's option: for NewQueueManager (every
// Run) or for one Run.
type MiddlewareOption []Middleware

func (o MiddlewareOption) applyManager(c *managerConfig) { c.middleware = append(c.middleware, o...) }
func (o MiddlewareOption) applyRun(c *runConfig)         { c.middleware = append(c.middleware, o...) }

// WithMiddleware wraps every handler of the QueueManager with mw, in order
// (the first is outermost). A middleware sees the job before the handler
// runs and the handler's error after. The chain is built once per Run. The
// pgqprom and pgqotel modules have middlewares; TraceMiddleware carries
// trace context from the enqueuer. Given to Run, the middleware wraps the
// handlers for that run only, inside those of NewQueueManager (pgqtest's
// RunOne and Drain record outcomes so).
func WithMiddleware(mw ...Middleware) MiddlewareOption { return MiddlewareOption(mw) }

// WatcherOption configures NewCompletionWatcher.
type WatcherOption interface{ applyWatcher(*watcherConfig) }

// NamingOption is an option that every pgq constructor and schema function
// takes: WithPrefix and WithSchema.
type NamingOption struct{ f func(*common) }

func (o NamingOption) applySchema(c *common)           { o.f(c) }
func (o NamingOption) applyQueries(c *common)          { o.f(c) }
func (o NamingOption) applyManager(c *managerConfig)   { o.f(&c.common) }
func (o NamingOption) applyWatcher(c *watcherConfig)   { o.f(&c.common) }
func (o NamingOption) applySchedulerManager(c *common) { o.f(c) }

// WithPrefix puts prefix in front of every object name (tables, enum,
// indexes, trigger, function and the NOTIFY channel), as PGQueuer's
// PGQUEUER_PREFIX does. It must be lower-case letters, digits and
// underscores, at most 31 bytes (so that every name fits in PostgreSQL's 63).
func WithPrefix(prefix string) NamingOption {
	return NamingOption{func(c *common) {
		if err := sqlname.CheckPrefix(prefix); err != nil {
			c.setErr(fmt.Errorf("pgq: %w", err))
			return
		}
		c.names.Prefix = prefix
	}}
}

// WithSchema places pgq's objects in the PostgreSQL schema name (as
// PGQueuer's PGQUEUER_SCHEMA does) instead of the connection's current
// schema. Install and Upgrade create the schema when it does not exist.
func WithSchema(name string) NamingOption {
	return NamingOption{func(c *common) {
		if err := sqlname.CheckSchema(name); err != nil {
			c.setErr(fmt.Errorf("pgq: %w", err))
			return
		}
		c.names.Schema = name
	}}
}

// Durability says which tables write WAL, as PGQueuer's durability modes do.
type Durability int

// The durability modes. The zero value leaves the tables as they are.
const (
	// Durable: every table is logged; nothing is lost in a server crash.
	Durable Durability = iota + 1
	// Balanced: the job and schedules tables are logged, the log and
	// statistics tables UNLOGGED (faster; a server crash empties the log and
	// the statistics, never the queue).
	Balanced
	// Volatile: all four tables are UNLOGGED (fastest; a server crash
	// empties them all).
	Volatile
)

func (d Durability) String() string {
	switch d {
	case Durable:
		return "durable"
	case Balanced:
		return "balanced"
	case Volatile:
		return "volatile"
	case 0:
		return "unchanged"
	}
	return fmt.Sprintf("Durability(%d)", int(d))
}

// ParseDurability parses "durable", "balanced" or "volatile".
func ParseDurability(s string) (Durability, error) {
	for _, d := range []Durability{Durable, Balanced, Volatile} {
		if d.String() == s {
			return d, nil
		}
	}
	return 0, fmt.Errorf("pgq: unknown durability %q: want durable, balanced or volatile", s)
}

type durabilityOption Durability

func (o durabilityOption) applySchema(c *common) {
	d := Durability(o)
	if d < Durable || d > Volatile {
		c.setErr(fmt.Errorf("pgq: invalid durability %d", int(d)))
		return
	}
	c.durability = d
}

// WithDurability makes Install and Upgrade set the tables' durability.
// Without it Upgrade leaves an installed schema's durability unchanged and
// Install creates durable tables.
func WithDurability(d Durability) SchemaOption { return durabilityOption(d) }

type noWidenIDOption struct{}

func (noWidenIDOption) applySchema(c *common) { c.noWidenID = true }

// WithoutIDWidening makes Upgrade leave int4 id columns and sequences as
// they are (PGQueuer's `upgrade --no-widen-id`): widening rewrites each such
// table under an ACCESS EXCLUSIVE lock. NarrowIDs lists what is left narrow;
// widen it later with an Upgrade without this option, in a quiet moment.
func WithoutIDWidening() SchemaOption { return noWidenIDOption{} }

// ListenOption is WithListenDSN; both QueueManager and CompletionWatcher take it.
type ListenOption struct{ dsn string }

func (o ListenOption) applyManager(c *managerConfig) { c.listenDSN = o.dsn }
func (o ListenOption) applyWatcher(c *watcherConfig) { c.listenDSN = o.dsn }

// WithListenDSN gives the LISTEN connection its own data source name, for
// when the *sql.DB goes through a transaction-mode pooler (where LISTEN does
// not work) or uses lib/pq (whose pooled connections cannot wait for
// notifications). Without it, a *sql.DB made by Open listens on its own
// DSN, a pgx *sql.DB lends one of its connections to the listener, and a
// lib/pq *sql.DB made by sql.Open is served by polling alone (the worker
// and the watcher log a warning saying so).
func WithListenDSN(dsn string) ListenOption { return ListenOption{dsn} }

// LoggerOption is WithLogger; QueueManager and CompletionWatcher take it.
type LoggerOption struct{ l *slog.Logger }

func (o LoggerOption) applyManager(c *managerConfig)   { o.set(&c.common) }
func (o LoggerOption) applyWatcher(c *watcherConfig)   { o.set(&c.common) }
func (o LoggerOption) applySchedulerManager(c *common) { o.set(c) }
func (o LoggerOption) set(c *common) {
	if o.l != nil {
		c.logger = o.l
	}
}

// WithLogger sets the logger for the worker's, watcher's or scheduler's
// own messages (connection trouble, handler panics). pgq is quiet by
// default.
func WithLogger(l *slog.Logger) LoggerOption { return LoggerOption{l} }

type watcherConfig struct {
	common
	refresh  time.Duration
	debounce time.Duration
}

type watcherOption func(*watcherConfig)

func (o watcherOption) applyWatcher(c *watcherConfig) { o(c) }

// WithRefreshInterval sets the safety poll of a CompletionWatcher (default
// DefaultRefreshInterval): a lost notification or a dead listener delays a
// completion by at most this long.
func WithRefreshInterval(d time.Duration) WatcherOption {
	return watcherOption(func(c *watcherConfig) {
		if err := positive("refresh interval", d); err != nil {
			c.setErr(err)
		}
		c.refresh = d
	})
}

// WithDebounce sets the coalescing window of a CompletionWatcher (default
// DefaultDebounce). The first notification after a quiet window is served
// at once; the notifications that follow within the window are folded into
// one status query at its end. A query that ends the last pending wait
// closes the window. Zero turns coalescing off.
func WithDebounce(d time.Duration) WatcherOption {
	return watcherOption(func(c *watcherConfig) {
		if d < 0 {
			c.setErr(fmt.Errorf("pgq: debounce must not be negative, got %v", d))
		}
		c.debounce = d
	})
}
