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
)

// Defaults of the WatcherOptions.
const (
	// DefaultRefreshInterval is the safety poll: the watcher re-reads the
	// statuses this often whatever the notifications say.
	DefaultRefreshInterval = 5 * time.Second
	// DefaultDebounce is the coalescing window: at most one refresh per
	// window, the first one at once.
	DefaultDebounce = 50 * time.Millisecond
)

// listenerStartWait bounds how long NewCompletionWatcher waits for its
// listener's first LISTEN.
const listenerStartWait = 5 * time.Second

// watcherQueryTimeout bounds one status query, so that a hung connection
// delays the watcher rather than stopping it.
const watcherQueryTimeout = 30 * time.Second

// CompletionWatcher waits for jobs to finish: for their latest log row to
// be terminal (successful, exception, canceled or deleted). One watcher
// serves any number of concurrent waits with one LISTEN connection and one
// status query per refresh over all waited ids.
//
// A refresh runs when the job table's trigger announces a change (so the
// completions of a PGQueuer worker wake it too), when the listener has
// (re)connected, and every refresh interval. A pgq worker whose outcome
// writes follow each other closely announces them once per 20 ms (the
// first after a quiet spell at once), so under load a completion may be
// heard of up to 20 ms after it committed. Refreshes are coalesced: the
// first after a quiet debounce window runs at once, the ones asked for
// within the window are folded into one at its end. A wait that begins
// looks up its own ids at once, so a job that finished earlier is reported
// without waiting for a notification; these look-ups are coalesced the same
// way, on a window of their own, and folded into a refresh when one is
// due. So the watcher runs at most two status queries per debounce window,
// whatever the number of waits and completions. A query that ends the last
// pending wait closes both windows, so the next wait's look-up and first
// refresh run at once: a caller that waits for one job after another is
// answered within about a millisecond each time, its own pace bounding the
// queries.
type CompletionWatcher struct {
	db        *sql.DB
	ctx       context.Context // ends when the watcher stops
	conn      *lane           // its own connection for the status queries
	cfg       watcherConfig
	q         *dbgen.Queries
	changed   chan struct{} // the job table changed or the listener (re)connected
	began     chan struct{} // a wait began
	stop      context.CancelFunc
	done      chan struct{} // closed when the goroutines have ended
	closeOnce sync.Once
	refreshes atomic.Uint64
	listen    *listening // nil for a pool that cannot listen

	mu       sync.Mutex
	stopErr  error                          // set once closed: what waits get then (see NewCompletionWatcher)
	waiting  map[JobID]map[*waiter]struct{} // by id: the waits still wanting it
	fresh    map[JobID]struct{}             // waited ids not looked up since their wait began
	drained  bool                           // a query ended the last pending wait (see takeDrained)
	progress progressWatch                  // WatchProgress's subscribers and listener
}

// waiter is one WaitFor, WaitForAll or WaitForFirst call.
type waiter struct {
	ids     []JobID // sorted, distinct
	need    int     // results still wanted
	results map[JobID]Status
	err     error
	ready   chan struct{} // closed when need reaches 0 or err is set
}

// NewCompletionWatcher starts a watcher on db. It returns once its LISTEN
// is in place (or after at most 5 s or the refresh interval, the listener
// then connecting in the background). The watcher stops when ctx ends or
// Close is called; either way every pending wait and every later one then
// returns an error matching ErrClosed, except a wait whose own ctx has
// ended, which returns that ctx's error. When the watcher stopped because
// ctx ended, the error also matches ctx's (context.Cause(ctx)): a wait
// whose ctx is ctx or derived from it matches context.Canceled when ctx
// is canceled, whether it sees its own ctx's end or the watcher's first.
//
// The watcher listens on the queue's channel with its own connection: a
// dedicated one on WithListenDSN's DSN when given, or on the DSN of a pool
// made by Open, otherwise one borrowed from a pgx
// (github.com/jackc/pgx/v5/stdlib) pool for the watcher's lifetime (so the
// pool needs room for it and for the status queries). A lib/pq pool opened
// with sql.Open, without WithListenDSN, cannot listen: the watcher then
// only polls, every refresh interval, and logs a warning saying so; open
// the pool with Open instead (see Listening).
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
		ctx:     lctx,
		conn:    newLane(db, cfg.names, canPin(db, 2, "the watcher", cfg.logger)),
		cfg:     cfg,
		q:       dbgen.New(),
		changed: make(chan struct{}, 1),
		began:   make(chan struct{}, 1),
		stop:    stop,
		done:    make(chan struct{}),
		waiting: map[JobID]map[*waiter]struct{}{},
		fresh:   map[JobID]struct{}{},
	}
	w.conn.take(ctx) // now, not when the first wait begins
	var wg sync.WaitGroup
	wg.Go(func() { w.loop(lctx) })
	// Return once LISTEN is in place, so that the first waits are served
	// in real time too; a listener that takes longer keeps trying in the
	// background.
	w.listen = startListening(lctx, &wg, db, cfg.common, watcherAppName(cfg.names.Channel()), w.conn, cfg.logger,
		min(cfg.refresh, listenerStartWait),
		"pgq: completion watcher's listener not connected yet; waits end at the next refresh until it is",
		listenHooks{notify: w.onEvent, up: func() { signal(w.changed) }})
	if w.listen == nil {
		warnNoListener(cfg.logger, db, "the completion watcher", cfg.refresh)
	}
	go func() {
		wg.Wait()
		w.failAll(stoppedBy(ctx)) // no progress listener starts after this
		w.progress.wg.Wait()
		close(w.done)
	}()
	return w, nil
}

// Listening reports whether the watcher's LISTEN is in place, so that
// completions end waits within milliseconds. It is false until the
// listener has connected, while it reconnects, after Close, and always for
// a pool that cannot listen (lib/pq opened with sql.Open, without
// WithListenDSN: use Open); then waits end at the next refresh (every
// refresh interval).
func (w *CompletionWatcher) Listening() bool {
	select {
	case <-w.done:
		return false
	default:
	}
	return w.listen.live()
}

// Refreshes returns how many status queries the watcher has run so far,
// refreshes and look-ups of new waits together: a measure of the load it
// puts on the database.
func (w *CompletionWatcher) Refreshes() uint64 { return w.refreshes.Load() }

// Close stops the watcher: every pending wait returns ErrClosed, and so
// does every later one (or, when the watcher's ctx had already ended, an
// error that matches ErrClosed and that ctx's error; see
// NewCompletionWatcher). Close returns once the watcher's goroutines have
// ended. It is safe to call more than once.
func (w *CompletionWatcher) Close() error {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		w.closeLocked(ErrClosed)
		w.mu.Unlock()
		w.stop()
	})
	<-w.done
	return nil
}

func (w *CompletionWatcher) onEvent(ev Event) {
	// An insert finishes nothing; a delete (the end of every job), a
	// truncate or an update may.
	if ev.Type == EventTableChanged && ev.Operation != "insert" {
		signal(w.changed)
	}
}

// loop runs the status queries when its refreshPlan says so.
func (w *CompletionWatcher) loop(ctx context.Context) {
	defer w.conn.close()
	safety := time.NewTicker(w.cfg.refresh)
	defer safety.Stop()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	s := refreshPlan{debounce: w.cfg.debounce, maxBackoff: w.cfg.refresh}
	for {
		select {
		case <-ctx.Done():
			return
		case <-safety.C:
			s.refresh = true
		case <-w.changed:
			s.refresh = true
		case <-w.began:
			s.lookup = true
		case <-timer.C:
		}
		now := time.Now()
		if k := s.due(now); k != queryNone {
			queried, err := w.query(ctx, k)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				w.cfg.logger.Warn("pgq: watcher status query failed; retrying", "err", err)
			}
			s.ran(k, now, queried, err)
			if err == nil && w.takeDrained() {
				// The query ended the last wait: one caller waiting for one
				// job after another is answered at once each time.
				s.quiet()
			}
		}
		if at, ok := s.next(); ok {
			timer.Reset(time.Until(at))
		} else {
			timer.Stop()
		}
	}
}

// takeDrained reports whether a query ended the last pending wait since
// the previous call. (Decided when the waits end, not when the loop looks:
// by then the caller may have begun its next wait.)
func (w *CompletionWatcher) takeDrained() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := w.drained
	w.drained = false
	return d
}

// query reads the latest status of the waited ids (all of them, or those
// of the waits that just began) in one statement and ends the waits that
// are over. It reports whether it had ids to look up.
func (w *CompletionWatcher) query(ctx context.Context, k queryKind) (bool, error) {
	w.mu.Lock()
	var ids []int64
	if k == queryRefresh {
		ids = make([]int64, 0, len(w.waiting))
		for id := range w.waiting {
			ids = append(ids, int64(id))
		}
	} else {
		ids = make([]int64, 0, len(w.fresh))
		for id := range w.fresh {
			ids = append(ids, int64(id))
		}
	}
	clear(w.fresh)
	w.mu.Unlock()
	if len(ids) == 0 {
		return false, nil
	}
	slices.Sort(ids)
	err := w.lookUp(ctx, ids)
	if err != nil && k == queryLookup {
		// Look the new waits up again on the retry.
		w.mu.Lock()
		for _, id := range ids {
			if _, ok := w.waiting[JobID(id)]; ok {
				w.fresh[JobID(id)] = struct{}{}
			}
		}
		w.mu.Unlock()
	}
	return true, err
}

func (w *CompletionWatcher) lookUp(ctx context.Context, ids []int64) error {
	ctx, cancel := context.WithTimeout(ctx, watcherQueryTimeout)
	defer cancel()
	var rows []*dbgen.LogLatestStatusRow
	err := w.conn.do(ctx, func(s session) (err error) {
		rows, err = w.q.LogLatestStatus(ctx, s.db, ids)
		return err
	})
	// Counted once the statement has returned (its snapshot taken), before
	// any wait it ends is released.
	w.refreshes.Add(1)
	if err != nil {
		return interpretError(err)
	}
	seen := make(map[int64]bool, len(rows))
	w.mu.Lock()
	for _, r := range rows {
		seen[r.JobID] = true
		if st := Status(r.Status); st.Terminal() {
			w.deliverLocked(JobID(r.JobID), st, nil)
		}
	}
	w.mu.Unlock()
	var unseen []int64
	for _, id := range ids {
		if !seen[id] {
			unseen = append(unseen, id)
		}
	}
	if len(unseen) == 0 {
		return nil
	}
	// No log row: the job exists only if its row is in the job table (a
	// job inserted without a log row, by hand or by an old producer).
	var existing []int64
	err = w.conn.do(ctx, func(s session) (err error) {
		existing, err = w.q.JobsExisting(ctx, s.db, unseen)
		return err
	})
	if err != nil {
		return interpretError(err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range unseen {
		if !slices.Contains(existing, id) {
			w.deliverLocked(JobID(id), "", fmt.Errorf("%w: job %d has neither a row in the job table nor a log row",
				ErrJobNotFound, id))
		}
	}
	return nil
}

// deliverLocked gives id's outcome to every wait on it. w.mu is held.
func (w *CompletionWatcher) deliverLocked(id JobID, st Status, err error) {
	defer func() { w.drained = w.drained || len(w.waiting) == 0 }()
	set := w.waiting[id]
	delete(w.waiting, id)
	delete(w.fresh, id)
	for wt := range set {
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

// removeLocked takes wt off every id it waits for. w.mu is held.
func (w *CompletionWatcher) removeLocked(wt *waiter) {
	for _, id := range wt.ids {
		set, ok := w.waiting[id]
		if !ok {
			continue
		}
		delete(set, wt)
		if len(set) == 0 {
			delete(w.waiting, id)
			delete(w.fresh, id)
		}
	}
}

// stoppedBy is the error of the waits of a watcher that stopped without
// Close (which sets ErrClosed first): ctx, the watcher's, ended.
func stoppedBy(ctx context.Context) error {
	if cause := context.Cause(ctx); cause != nil {
		return fmt.Errorf("%w: %w", ErrClosed, cause)
	}
	return ErrClosed
}

// failAll closes the watcher (see closeLocked) and ends every pending
// wait with its stop error.
func (w *CompletionWatcher) failAll(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failAllLocked(err)
}

// closeLocked marks the watcher closed, with err as the error of its
// waits unless it was closed before. The caller holds w.mu.
func (w *CompletionWatcher) closeLocked(err error) {
	if w.stopErr == nil {
		w.stopErr = err
	}
}

// failAllLocked is failAll for a caller that holds w.mu.
func (w *CompletionWatcher) failAllLocked(err error) {
	w.closeLocked(err)
	err = w.stopErr
	for _, set := range w.waiting {
		for wt := range set {
			select {
			case <-wt.ready:
			default:
				wt.err = err
				close(wt.ready)
			}
		}
	}
	clear(w.waiting)
	clear(w.fresh)
}

// wait registers a wait for need of ids and blocks until it is over.
func (w *CompletionWatcher) wait(ctx context.Context, ids []JobID, need int) (*waiter, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ids = sortedIDs(ids)
	wt := &waiter{ids: ids, need: min(need, len(ids)), results: make(map[JobID]Status, len(ids)), ready: make(chan struct{})}
	if len(ids) == 0 {
		return wt, nil
	}
	w.mu.Lock()
	if w.stopErr != nil {
		err := w.stopErr
		w.mu.Unlock()
		return nil, err
	}
	for _, id := range ids {
		set := w.waiting[id]
		if set == nil {
			set = map[*waiter]struct{}{}
			w.waiting[id] = set
		}
		set[wt] = struct{}{}
		w.fresh[id] = struct{}{}
	}
	w.mu.Unlock()
	signal(w.began)

	select {
	case <-wt.ready:
	case <-ctx.Done():
		w.mu.Lock()
		select {
		case <-wt.ready: // it ended meanwhile
		default:
			w.removeLocked(wt)
			w.mu.Unlock()
			return nil, ctx.Err()
		}
		w.mu.Unlock()
	}
	if wt.err != nil {
		// A watcher made with the wait's ctx closes when that ends: the
		// wait reports ctx's end then, not ErrClosed, whichever came
		// first to it. (When the watcher's end comes first while the
		// cancellation has yet to reach a ctx derived from its ctx,
		// wt.err matches ctx's error too.)
		if errors.Is(wt.err, ErrClosed) && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, wt.err
	}
	return wt, nil
}

// pending returns how many ids are waited for and by how many waits.
func (w *CompletionWatcher) pending() (ids, waits int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := map[*waiter]bool{}
	for _, set := range w.waiting {
		for wt := range set {
			seen[wt] = true
		}
	}
	return len(w.waiting), len(seen)
}

// WaitFor blocks until job id finishes and returns its terminal status
// (successful, exception, canceled or deleted). It returns an error
// matching ErrJobNotFound for an id that never existed, ctx.Err() when ctx
// ends and ErrClosed when the watcher is closed.
func (w *CompletionWatcher) WaitFor(ctx context.Context, id JobID) (Status, error) {
	wt, err := w.wait(ctx, []JobID{id}, 1)
	if err != nil {
		return "", err
	}
	return wt.results[id], nil
}

// WaitForAll blocks until every job of ids has finished and returns their
// terminal statuses. An id that never existed ends the wait with an error
// matching ErrJobNotFound and naming it. An empty ids returns an empty map.
func (w *CompletionWatcher) WaitForAll(ctx context.Context, ids []JobID) (map[JobID]Status, error) {
	wt, err := w.wait(ctx, ids, len(ids))
	if err != nil {
		return nil, err
	}
	return wt.results, nil
}

// WaitForFirst blocks until any job of ids finishes and returns its id and
// terminal status; the wait on the others ends with it. When several have
// finished by the time the watcher looks, the smallest id wins. An id that
// never existed ends the wait with an error matching ErrJobNotFound and
// naming it, unless another id has finished by then.
func (w *CompletionWatcher) WaitForFirst(ctx context.Context, ids []JobID) (JobID, Status, error) {
	if len(ids) == 0 {
		return 0, "", errors.New("pgq: WaitForFirst: no ids given")
	}
	wt, err := w.wait(ctx, ids, 1)
	if err != nil {
		return 0, "", err
	}
	for id, st := range wt.results {
		return id, st, nil
	}
	return 0, "", errors.New("pgq: WaitForFirst: wait ended without a result") // unreachable
}
