package pgq

import (
	"context"
	"database/sql"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/notifier"
)

// Listener health checks of a running worker: how often it sends itself a
// health_check_event, and how long it waits for the echo (see
// listening.check). Run options for the tests change them.
const (
	defaultHealthInterval = 30 * time.Second
	defaultHealthTimeout  = 5 * time.Second
)

// listening is the LISTEN side of a worker or a watcher: a notifier on the
// queue's channel, whether its LISTEN is in place and proven, and the
// health echo that proves it. Both the notifier's echo after each LISTEN
// and a worker's periodic health check send a health_check_event on the
// owner's own connection (lane) and wait for it to come back.
type listening struct {
	channel string
	q       *dbgen.Queries
	lane    *lane // the owner's connection the echoes are sent on
	logger  *slog.Logger

	up    atomic.Bool  // LISTEN is in place
	deaf  atomic.Bool  // the last periodic health check did not come back
	id    uuid.UUID    // the periodic health checks' event id
	heard atomic.Int64 // when the last periodic health check came back (UnixNano)
}

// listenHooks are what the owner of a listening does with what arrives.
type listenHooks struct {
	notify func(Event) // any other event of the channel
	up     func()      // LISTEN is in place (first time, or again)
}

// startListening starts a listener for db in wg, on the DSN that c
// configures, logging to logger, and waits until its LISTEN is in place,
// ctx ends or wait passes (it then logs notReady and keeps trying in the
// background). It returns nil, and starts nothing, for a pool that cannot
// listen (lib/pq from sql.Open without WithListenDSN).
func startListening(ctx context.Context, wg *sync.WaitGroup, db *sql.DB, c common, appName string,
	ln *lane, logger *slog.Logger, wait time.Duration, notReady string, h listenHooks) *listening {
	channel := c.names.Channel()
	nl := notifier.New(db, c.listenDSNFor(db), channel, appName, logger)
	if nl == nil {
		return nil
	}
	l := &listening{channel: channel, q: dbgen.New(), lane: ln, logger: logger, id: uuid.New()}
	ready := make(chan struct{}) // closed once LISTEN works, or is found deaf
	var once sync.Once
	wg.Go(func() {
		_ = nl.Run(ctx, notifier.Callbacks{
			Notify: func(payload string) { l.onNotify(payload, h.notify) },
			Connected: func() {
				l.up.Store(true)
				once.Do(func() { close(ready) })
				if h.up != nil {
					h.up()
				}
			},
			Disconnected: func() { l.up.Store(false) },
			Echo:         l.echo,
			Deaf: func() {
				l.up.Store(false)
				once.Do(func() { close(ready) })
			},
		})
	})
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ready:
	case <-ctx.Done():
	case <-t.C:
		logger.Warn(notReady, "waited", wait)
	}
	return l
}

// live reports whether notifications arrive now: LISTEN is in place and
// the last health check came back. A nil listening is never live.
func (l *listening) live() bool {
	return l != nil && l.up.Load() && !l.deaf.Load()
}

func (l *listening) onNotify(payload string, notify func(Event)) {
	ev, ok := ParseEvent(payload)
	if !ok {
		return
	}
	if ev.Type == EventHealthCheck && ev.ID == l.id {
		l.heard.Store(time.Now().UnixNano())
		return
	}
	if notify != nil {
		notify(ev)
	}
}

// echo sends a health_check_event with id on the owner's connection.
func (l *listening) echo(ctx context.Context, id uuid.UUID) error {
	payload, _ := json.Marshal(newHealthCheckEvent(l.channel, id))
	return l.lane.do(ctx, func(s session) error {
		return l.q.Notify(ctx, s.db, dbgen.NotifyParams{Channel: l.channel, Payload: string(payload)})
	})
}

// check sends a health check to itself every interval until ctx ends;
// when it does not come back within timeout the listener counts as deaf
// (the owner polls often, and onDeaf is called) until one does. The
// notifier reconnects by itself meanwhile.
func (l *listening) check(ctx context.Context, interval, timeout time.Duration, pollEvery time.Duration, onDeaf func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		sent := time.Now()
		if l.echo(ctx, l.id) == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(timeout):
			}
			ok := l.heard.Load() >= sent.UnixNano()
			if l.deaf.Swap(!ok) == ok { // changed
				if ok {
					l.logger.Info("pgq: listener healthy again")
				} else {
					l.logger.Warn("pgq: listener did not echo its health check; polling", "every", pollEvery)
					onDeaf()
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
