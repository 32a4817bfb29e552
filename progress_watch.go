package pgq

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/pgq-dev/pgq/internal/notifier"
)

// progressWatch is the watcher's side of progress: the subscribers of
// WatchProgress by job, and a second listener, on the pgq-only progress
// channel, started with the first subscription and stopped with the
// watcher.
type progressWatch struct {
	wg      sync.WaitGroup // the progress listener
	started bool
	subs    map[JobID]map[chan struct{}]struct{}
}

// Progress returns the latest progress job id has reported (see
// ReportProgress): Updated is zero when it has reported none, or is
// unknown. The progress of a finished job stays readable for about an
// hour.
func (w *CompletionWatcher) Progress(ctx context.Context, id JobID) (Progress, error) {
	ctx, cancel := context.WithTimeout(ctx, watcherQueryTimeout)
	defer cancel()
	var m map[JobID]Progress
	err := w.conn.do(ctx, func(s session) (err error) {
		m, err = readProgress(ctx, w.q, s.db, []JobID{id})
		return err
	})
	if err != nil {
		return Progress{}, fmt.Errorf("pgq: progress of job %d: %w", id, err)
	}
	if p, ok := m[id]; ok {
		return p, nil
	}
	return Progress{JobID: id}, nil
}

// WatchProgress waits for job id to finish, as WaitFor does, and calls fn
// with its progress each time that changes (see ReportProgress): first
// with the progress it has reported so far, if any, then live, within
// milliseconds of each write (a worker writes a job's progress at most
// every ProgressInterval), and once more when the job has finished if its
// last report came late. A report written while the watcher's listener
// was not listening yet, or was reconnecting, arrives when it listens
// again. fn runs on the caller's goroutine, one call at a
// time, and may be slow: reports that arrive meanwhile are coalesced.
// Progress arrives on the pgq-only channel ch_pgqueuer_pgq_progress (with
// the prefix), which the watcher listens on with a second connection from
// its first WatchProgress until Close; without a listener (see Listening)
// it is polled every refresh interval. It returns the terminal status, or
// the errors WaitFor returns.
func (w *CompletionWatcher) WatchProgress(ctx context.Context, id JobID, fn func(Progress)) (Status, error) {
	if fn == nil {
		return "", fmt.Errorf("pgq: WatchProgress of job %d: fn is nil", id)
	}
	changed, err := w.subscribeProgress(id)
	if err != nil {
		return "", err
	}
	defer w.unsubscribeProgress(id, changed)

	type result struct {
		st  Status
		err error
	}
	waitCtx, stopWait := context.WithCancel(ctx)
	done := make(chan result, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		st, err := w.WaitFor(waitCtx, id)
		done <- result{st, err}
	})
	defer wg.Wait()
	defer stopWait()

	var last time.Time
	emit := func() error {
		p, err := w.Progress(ctx, id)
		if err != nil {
			return err
		}
		if !p.Updated.IsZero() && !p.Updated.Equal(last) {
			last = p.Updated
			fn(p)
		}
		return nil
	}
	poll := time.NewTicker(w.cfg.refresh)
	defer poll.Stop()
	if err := emit(); err != nil && ctx.Err() == nil {
		w.cfg.logger.Warn("pgq: reading job progress failed", "job_id", id, "err", err)
	}
	for {
		select {
		case r := <-done:
			if r.err == nil {
				_ = emit() // a last report written just before the outcome
			}
			return r.st, r.err
		case <-changed:
		case <-poll.C:
		}
		if err := emit(); err != nil && ctx.Err() == nil {
			w.cfg.logger.Warn("pgq: reading job progress failed", "job_id", id, "err", err)
		}
	}
}

// subscribeProgress registers a subscriber of id's progress, starting the
// progress listener if it is not running yet.
func (w *CompletionWatcher) subscribeProgress(id JobID) (chan struct{}, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopErr != nil {
		return nil, w.stopErr
	}
	pw := &w.progress
	if pw.subs == nil {
		pw.subs = map[JobID]map[chan struct{}]struct{}{}
	}
	if !pw.started {
		pw.started = true
		channel := w.cfg.names.ProgressChannel()
		if nl := notifier.New(w.db, w.cfg.listenDSNFor(w.db), channel, truncate("pgq progress "+channel, 63), w.cfg.logger); nl != nil {
			ctx := w.ctx
			pw.wg.Go(func() {
				_ = nl.Run(ctx, notifier.Callbacks{Notify: w.onProgress, Connected: w.onProgressListening})
			})
		}
	}
	ch := make(chan struct{}, 1)
	set := pw.subs[id]
	if set == nil {
		set = map[chan struct{}]struct{}{}
		pw.subs[id] = set
	}
	set[ch] = struct{}{}
	return ch, nil
}

func (w *CompletionWatcher) unsubscribeProgress(id JobID, ch chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if set := w.progress.subs[id]; set != nil {
		delete(set, ch)
		if len(set) == 0 {
			delete(w.progress.subs, id)
		}
	}
}

// onProgressListening wakes every subscriber once the progress listener's
// LISTEN is in place, at its start and after each reconnect: a report
// written before that (after a subscriber's first read, or while the
// connection was down) sent its notification to nobody, and would
// otherwise reach the subscriber only at its next poll.
func (w *CompletionWatcher) onProgressListening() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, set := range w.progress.subs {
		for ch := range set {
			signal(ch)
		}
	}
}

// onProgress wakes the subscribers of the jobs a progress notification
// names.
func (w *CompletionWatcher) onProgress(payload string) {
	var ev progressEvent
	if json.Unmarshal([]byte(payload), &ev) != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range ev.IDs {
		for ch := range w.progress.subs[id] {
			signal(ch)
		}
	}
}
