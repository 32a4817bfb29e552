package pgq

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/notifier"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

// Defaults of the WatcherOptions.
const (
	// DefaultRefreshInterval is the safety poll: the watcher re-reads the
	// statuses this often whatever the notifications say.
	DefaultRefreshInterval = 5 * time.Second
	// DefaultDebounce is the coalescing window: at most one status query
	// per window, the first one at once.
	DefaultDebounce = 50 * time.Millisecond
)

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
// DefaultDebounce). The first wake-up after a quiet window is served at
// once; wake-ups within the window are folded into one query at its end.
func WithDebounce(d time.Duration) WatcherOption {
	return watcherOption(func(c *watcherConfig) {
		if d < 0 {
			c.setErr(fmt.Errorf("pgq: debounce must not be negative, got %v", d))
		}
		c.debounce = d
	})
}

// CompletionWatcher waits for jobs to finish. One watcher serves any number
// of concurrent waits with one LISTEN connection and one status query per
// refresh over all waited ids. It refreshes when the job table's trigger
// announces a change (so a PGQueuer worker's completions wake it too),
// when a wait begins, and every refresh interval.
type CompletionWatcher struct {
	db        *sql.DB
	rdb       sqlname.DBTX
	cfg       watcherConfig
	q         *dbgen.Queries
	kick      chan struct{} // something may have finished (or a wait began)
	stop      context.CancelFunc
	done      chan struct{} // closed when the goroutines have ended
	closeOnce sync.Once
	refreshes atomic.Uint64

	mu      sync.Mutex
	closed  bool
	waiting map[JobID]map[*waiter]struct{}
}

// waiter is one WaitFor, WaitForAll or WaitForFirst call.
type waiter struct {
	need    int // results still wanted
	results map[JobID]Status
	err     error
	ready   chan struct{} // closed when need reaches 0 or err is set
}

// NewCompletionWatcher starts a watcher on db. It stops when ctx ends or
// Close is called.
func NewCompletionWatcher(ctx context.Context, db *sql.DB, opts ...WatcherOption) (*CompletionWatcher, error) {
	cfg := watcherConfig{common: newCommon(), refresh: DefaultRefreshInterval, debounce: DefaultDebounce}
	for _, o := range opts {
		if o != nil {
			o.applyWatcher(&cfg)
		}
	}
	if cfg.err != nil {
		return nil, cfg.err
	}
	if db == nil {
		return nil, errors.New("pgq: NewCompletionWatcher: db is nil")
	}
	if err := checkSchema(ctx, db, cfg.common); err != nil {
		return nil, err
	}
	lctx, stop := context.WithCancel(ctx)
	w := &CompletionWatcher{
		db:      db,
		rdb:     sqlname.NewRewriter(cfg.names).Wrap(db),
		cfg:     cfg,
		q:       dbgen.New(),
		kick:    make(chan struct{}, 1),
		stop:    stop,
		done:    make(chan struct{}),
		waiting: map[JobID]map[*waiter]struct{}{},
	}
	var wg sync.WaitGroup
	if l := notifier.New(db, cfg.listenDSN, cfg.names.Channel(), cfg.logger); l != nil {
		wg.Go(func() {
			_ = l.Run(lctx, notifier.Callbacks{Notify: w.onNotify, Connected: w.wake})
		})
	}
	wg.Go(func() { w.loop(lctx) })
	go func() {
		wg.Wait()
		w.failAll(ErrClosed)
		close(w.done)
	}()
	return w, nil
}

// Refreshes returns how many status queries the watcher has run.
func (w *CompletionWatcher) Refreshes() uint64 { return w.refreshes.Load() }

// Close stops the watcher: every pending wait returns ErrClosed. Close
// returns once the watcher's goroutines have ended. It is safe to call more
// than once.
func (w *CompletionWatcher) Close() error {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		w.closed = true
		w.mu.Unlock()
		w.stop()
	})
	<-w.done
	return nil
}

func (w *CompletionWatcher) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *CompletionWatcher) onNotify(payload string) {
	ev, ok := ParseEvent(payload)
	if !ok {
		return
	}
	// Inserts finish nothing; deletes (the end of every job), truncates and
	// updates may.
	if ev.Type == EventTableChanged && ev.Operation != "insert" {
		w.wake()
	}
}

// loop refreshes on wake-ups, coalesced: the first wake-up after a quiet
// debounce window is served at once, later ones at the window's end.
func (w *CompletionWatcher) loop(ctx context.Context) {
	safety := time.NewTicker(w.cfg.refresh)
	defer safety.Stop()
	var last time.Time
	pending := false
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-safety.C:
			pending = true
		case <-w.kick:
			pending = true
		case <-timer.C:
		}
		if !pending {
			continue
		}
		if wait := w.cfg.debounce - time.Since(last); wait > 0 {
			resetTimer(timer, wait)
			continue
		}
		pending = false
		if w.refresh(ctx) {
			last = time.Now()
		}
	}
}

// refresh reads the latest status of every waited id in one query and
// releases the waits that are over. It reports whether it queried.
func (w *CompletionWatcher) refresh(ctx context.Context) bool {
	w.mu.Lock()
	ids := make([]int64, 0, len(w.waiting))
	for id := range w.waiting {
		ids = append(ids, int64(id))
	}
	w.mu.Unlock()
	if len(ids) == 0 {
		return false
	}
	w.refreshes.Add(1)
	rows, err := w.q.LogLatestStatus(ctx, w.rdb, ids)
	if err != nil {
		if ctx.Err() == nil {
			w.cfg.logger.Warn("pgq: watcher status query failed", "err", err)
		}
		return true
	}
	seen := make(map[JobID]bool, len(rows))
	for _, r := range rows {
		id := JobID(r.JobID)
		seen[id] = true
		if st := Status(r.Status); st.Terminal() {
			w.deliver(id, st, nil)
		}
	}
	var unseen []int64
	for _, id := range ids {
		if !seen[JobID(id)] {
			unseen = append(unseen, id)
		}
	}
	if len(unseen) == 0 {
		return true
	}
	// No log row: the job exists only if its row is in the job table
	// (a job inserted without a log row, by hand or an old producer).
	existing, err := w.q.JobsExisting(ctx, w.rdb, unseen)
	if err != nil {
		return true
	}
	for _, id := range unseen {
		if !slices.Contains(existing, id) {
			w.deliver(JobID(id), "", fmt.Errorf("%w: job %d", ErrJobNotFound, id))
		}
	}
	return true
}

// deliver gives id's outcome to every wait on it.
func (w *CompletionWatcher) deliver(id JobID, st Status, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for wt := range w.waiting[id] {
		if err != nil {
			wt.err = err
		} else {
			wt.results[id] = st
			wt.need--
		}
		if wt.err != nil || wt.need <= 0 {
			w.removeLocked(wt)
			close(wt.ready)
		}
	}
}

func (w *CompletionWatcher) removeLocked(wt *waiter) {
	for id, set := range w.waiting {
		if _, ok := set[wt]; ok {
			delete(set, wt)
			if len(set) == 0 {
				delete(w.waiting, id)
			}
		}
	}
}

func (w *CompletionWatcher) failAll(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	done := map[*waiter]bool{}
	for _, set := range w.waiting {
		for wt := range set {
			if !done[wt] {
				done[wt] = true
				wt.err = err
				close(wt.ready)
			}
		}
	}
	clear(w.waiting)
}

// wait registers a wait for need of ids and blocks until it is over.
func (w *CompletionWatcher) wait(ctx context.Context, ids []JobID, need int) (*waiter, error) {
	ids = sortedIDs(ids)
	if len(ids) == 0 {
		return &waiter{results: map[JobID]Status{}}, nil
	}
	wt := &waiter{need: min(need, len(ids)), results: make(map[JobID]Status, len(ids)), ready: make(chan struct{})}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil, ErrClosed
	}
	for _, id := range ids {
		set := w.waiting[id]
		if set == nil {
			set = map[*waiter]struct{}{}
			w.waiting[id] = set
		}
		set[wt] = struct{}{}
	}
	w.mu.Unlock()
	w.wake() // a job may have finished already

	select {
	case <-wt.ready:
	case <-ctx.Done():
		w.mu.Lock()
		select {
		case <-wt.ready: // it finished meanwhile
		default:
			w.removeLocked(wt)
			w.mu.Unlock()
			return nil, ctx.Err()
		}
		w.mu.Unlock()
	}
	if wt.err != nil {
		return nil, wt.err
	}
	return wt, nil
}

// WaitFor blocks until job id finishes and returns its terminal status
// (successful, exception, canceled or deleted). It returns ErrJobNotFound
// for an id that never existed, ctx.Err() when ctx ends and ErrClosed when
// the watcher is closed.
func (w *CompletionWatcher) WaitFor(ctx context.Context, id JobID) (Status, error) {
	wt, err := w.wait(ctx, []JobID{id}, 1)
	if err != nil {
		return "", err
	}
	return wt.results[id], nil
}

// WaitForAll blocks until every job of ids has finished and returns their
// terminal statuses. An id that never existed ends the wait with
// ErrJobNotFound naming it.
func (w *CompletionWatcher) WaitForAll(ctx context.Context, ids []JobID) (map[JobID]Status, error) {
	wt, err := w.wait(ctx, ids, len(ids))
	if err != nil {
		return nil, err
	}
	return wt.results, nil
}

// WaitForFirst blocks until any job of ids finishes and returns its id and
// terminal status; the wait on the others ends cleanly. An id that never
// existed ends the wait with ErrJobNotFound naming it.
func (w *CompletionWatcher) WaitForFirst(ctx context.Context, ids []JobID) (JobID, Status, error) {
	if len(ids) == 0 {
		return 0, "", errors.New("pgq: WaitForFirst: no ids")
	}
	wt, err := w.wait(ctx, ids, 1)
	if err != nil {
		return 0, "", err
	}
	for id, st := range wt.results {
		return id, st, nil
	}
	return 0, "", errors.New("pgq: WaitForFirst: no result") // unreachable
}
