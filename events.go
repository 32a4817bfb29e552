package pgq

import (
	"context"
	"database/sql"
	"errors"

	"github.com/pgq-dev/pgq/internal/notifier"
)

// EventCallbacks receive what ListenEvents sees. They run on the
// listener's goroutine and must not block for long; nil ones are skipped.
type EventCallbacks struct {
	// Event is called with each notification on the queue's channel:
	// its payload and, when it is an event pgq knows (see ParseEvent),
	// the event (ok true).
	Event func(ev Event, ok bool, payload string)
	// Connected is called when LISTEN is in place, the first time and
	// after each reconnection: events sent while it was away are lost,
	// so a caller that keeps state refreshes it.
	Connected func()
	// Disconnected is called when the listening connection is lost; it
	// reconnects by itself, with backoff.
	Disconnected func()
}

// ErrCannotListen is returned by ListenEvents for a pool it cannot listen
// on: lib/pq opened with sql.Open and no WithListenDSN (use Open, or pass
// the DSN).
var ErrCannotListen = errors.New("pgq: cannot listen: a lib/pq pool opened with sql.Open needs WithListenDSN (or open it with pgq.Open)")

// ListenEvents listens on the queue's channel (what `pgq listen` prints)
// and calls cb with each notification until ctx ends, reconnecting when
// the connection is lost; it returns ctx's error then. It holds one
// connection: its own on the DSN (WithListenDSN, or the one pgq.Open was
// given), or one borrowed from a pgx pool. Of opts, WithPrefix,
// WithSchema, WithListenDSN and WithLogger apply.
func ListenEvents(ctx context.Context, db *sql.DB, cb EventCallbacks, opts ...WatcherOption) error {
	cfg := watcherConfig{common: newCommon()}
	for _, o := range opts {
		if o != nil {
			o.applyWatcher(&cfg)
		}
	}
	if cfg.err != nil {
		return cfg.err
	}
	channel := cfg.names.Channel()
	l := notifier.New(db, cfg.listenDSNFor(db), channel, truncate("pgq listen "+channel, 63), cfg.logger)
	if l == nil {
		return ErrCannotListen
	}
	if err := l.Run(ctx, notifier.Callbacks{
		Notify: func(payload string) {
			if cb.Event != nil {
				ev, ok := ParseEvent(payload)
				cb.Event(ev, ok, payload)
			}
		},
		Connected:    cb.Connected,
		Disconnected: cb.Disconnected,
	}); err != nil {
		return err
	}
	return ctx.Err()
}
