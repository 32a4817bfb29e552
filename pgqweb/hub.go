package pgqweb

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/pgq-dev/pgq"
)

// Refresh pacing of open pages.
const (
	// minRefresh is the least time between two refreshes: a busy queue
	// sends thousands of events a second; pages re-read once a second.
	minRefresh = time.Second
	// pollRefresh is the refresh period while the listener is not
	// connected (the database is away, or the pool cannot listen).
	pollRefresh = 2 * time.Second
	// idleRefresh is the refresh period of an idle queue: clocks on the
	// pages move on, heartbeats age.
	idleRefresh = 15 * time.Second
	// keptEvents is how many of the latest events the tail keeps.
	keptEvents = 200
	// linger is how long the listener stays after the last page closed:
	// moving from page to page keeps it (and the events of the tail).
	linger = 30 * time.Second
)

// received is an event of the tail.
type received struct {
	At      time.Time
	Event   pgq.Event
	OK      bool
	Payload string
}

// hub is the one clock of the open pages of a process. While at least one
// page listens (subscribe), it keeps one LISTEN connection on the queue's
// channel and ticks (a new version) at most once per minRefresh after an
// event, every idleRefresh otherwise, and every pollRefresh while it
// cannot listen. Pages re-read what they show when the version changes.
type hub struct {
	parent context.Context
	db     *sql.DB
	wopts  []pgq.WatcherOption
	logger *slog.Logger

	mu        sync.Mutex
	version   uint64
	changed   chan struct{} // closed and replaced at each tick
	subs      int
	stop      context.CancelFunc
	idle      *time.Timer // stops the run linger after the last page left
	listening bool
	dirty     bool
	events    []received // ring of the latest events, oldest first
	poke      chan struct{}
}

func newHub(ctx context.Context, db *sql.DB, wopts []pgq.WatcherOption, logger *slog.Logger) *hub {
	return &hub{parent: ctx, db: db, wopts: wopts, logger: logger, changed: make(chan struct{}), poke: make(chan struct{}, 1)}
}

// subscribe registers an open page; the returned function unregisters it.
// The first subscriber starts the listener and the clock; the last one to
// leave stops them.
func (h *hub) subscribe() (unsubscribe func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs++
	if h.idle != nil {
		h.idle.Stop()
		h.idle = nil
	}
	if h.stop == nil {
		// A run stopped earlier may still be ending: it ends by itself,
		// its ctx canceled.
		ctx, cancel := context.WithCancel(h.parent)
		h.stop = cancel
		go h.run(ctx)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.subs--
			if h.subs == 0 {
				stop := h.stop
				var idle *time.Timer
				idle = time.AfterFunc(linger, func() {
					h.mu.Lock()
					defer h.mu.Unlock()
					if h.idle == idle { // no page came back meanwhile
						stop()
						h.stop, h.idle = nil, nil
						h.listening = false
					}
				})
				h.idle = idle
			}
		})
	}
}

// state returns the current version and a channel closed at the next tick.
func (h *hub) state() (uint64, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.version, h.changed
}

// tick starts a new version.
func (h *hub) tick() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.version++
	close(h.changed)
	h.changed = make(chan struct{})
	h.dirty = false
}

// touch says something changed that open pages show (an action ran): a
// tick follows within minRefresh.
func (h *hub) touch() {
	h.mu.Lock()
	h.dirty = true
	h.mu.Unlock()
	select {
	case h.poke <- struct{}{}:
	default:
	}
}

// latestEvents returns the kept events, newest first.
func (h *hub) latestEvents() []received {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]received, len(h.events))
	for i, e := range h.events {
		out[len(h.events)-1-i] = e
	}
	return out
}

// isListening reports whether the listener is connected.
func (h *hub) isListening() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.listening
}

// run owns the listener and the clock until ctx ends.
func (h *hub) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	listenErr := make(chan error, 1)
	wg.Go(func() {
		listenErr <- pgq.ListenEvents(ctx, h.db, pgq.EventCallbacks{
			Event: func(ev pgq.Event, ok bool, payload string) {
				h.mu.Lock()
				h.events = append(h.events, received{At: time.Now().UTC(), Event: ev, OK: ok, Payload: payload})
				if len(h.events) > keptEvents {
					h.events = h.events[len(h.events)-keptEvents:]
				}
				h.mu.Unlock()
				h.touch()
			},
			Connected: func() {
				h.mu.Lock()
				h.listening = true
				h.mu.Unlock()
				h.touch()
			},
			Disconnected: func() {
				h.mu.Lock()
				h.listening = false
				h.mu.Unlock()
				h.touch()
			},
		}, h.wopts...)
	})
	last := time.Now()
	timer := time.NewTimer(pollRefresh)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-listenErr:
			if err != nil && !errors.Is(err, context.Canceled) {
				h.logger.Info("pgqweb: no listener; pages refresh every 2 s", "err", err)
			}
			listenErr = nil
		case <-h.poke:
		case <-timer.C:
		}
		h.mu.Lock()
		dirty, listening := h.dirty, h.listening
		h.mu.Unlock()
		since := time.Since(last)
		period := idleRefresh
		if !listening {
			period = pollRefresh
		}
		switch {
		case (dirty && since >= minRefresh) || since >= period:
			h.tick()
			last = time.Now()
			timer.Reset(period)
		case dirty:
			timer.Reset(minRefresh - since)
		default:
			timer.Reset(period - since)
		}
	}
}
