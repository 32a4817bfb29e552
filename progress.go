package pgq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

// Progress is the latest progress a handler reported for its job with
// ReportProgress.
type Progress struct {
	JobID    JobID
	Fraction float64   // in [0, 1]
	Note     string    // free text, "" for none
	Updated  time.Time // when it was written; zero when the job has reported none
}

// Bounds of ReportProgress and its writes.
const (
	// MaxProgressNote is the longest note ReportProgress takes, in bytes.
	MaxProgressNote = 1024
	// ProgressInterval is the least time between two writes of one
	// worker's progress: what its handlers report meanwhile is coalesced
	// (each job's latest value wins) and written for all jobs in one
	// statement, so a job's progress is written at most four times a
	// second however often its handler reports.
	ProgressInterval = 250 * time.Millisecond
	// progressRetention is how long the progress of a finished job stays
	// readable (GetJob, CompletionWatcher.Progress) before workers prune it.
	progressRetention = time.Hour
	// progressPruneEvery is how often a worker prunes that progress.
	progressPruneEvery = 5 * time.Minute
	// maxProgressBatch is the most jobs one progress write carries.
	maxProgressBatch = 1000
	// progressWriteTimeout bounds one progress write.
	progressWriteTimeout = 10 * time.Second
)

// ErrNotInHandler is returned by ReportProgress called with a ctx that is
// not a handler's (or one whose worker does not write progress).
var ErrNotInHandler = errors.New("pgq: not called with a handler's context")

// ReportProgress records how far the handler whose ctx this is has come
// with its job: fraction in [0, 1] and a short note (up to
// MaxProgressNote bytes of UTF-8, no NUL bytes). It does not wait for the
// database: the worker writes each job's latest report at most every
// ProgressInterval, many jobs per statement, and, when the handler
// returns, its last report before the job's outcome. Waiters see it with
// CompletionWatcher.Progress and WatchProgress, GetJob in JobInfo.Progress,
// and `pgq web` as a bar. It returns an error naming the bad value for a
// fraction outside [0, 1] (or NaN) or a bad note, and ErrNotInHandler
// outside a handler. PGQueuer's workers do not report progress.
func ReportProgress(ctx context.Context, fraction float64, note string) error {
	if err := checkProgress(fraction, note); err != nil {
		return err
	}
	s := scopeFrom(ctx)
	if s == nil || s.progress == nil {
		return ErrNotInHandler
	}
	s.progress.report(s.job.ID, fraction, note)
	return nil
}

func checkProgress(fraction float64, note string) error {
	if math.IsNaN(fraction) || fraction < 0 || fraction > 1 {
		return fmt.Errorf("pgq: progress %v is outside [0, 1]", fraction)
	}
	switch {
	case len(note) > MaxProgressNote:
		return fmt.Errorf("pgq: progress note of %d bytes is longer than MaxProgressNote (%d)", len(note), MaxProgressNote)
	case !utf8.ValidString(note):
		return fmt.Errorf("pgq: progress note %q is not valid UTF-8", note)
	case strings.IndexByte(note, 0) >= 0:
		return fmt.Errorf("pgq: progress note %q contains a NUL byte", note)
	}
	return nil
}

// progressEvent is the payload of a notification on the progress channel:
// the jobs whose progress a write changed.
type progressEvent struct {
	IDs []JobID `json:"ids"`
}

type reported struct {
	fraction float64
	note     string
}

// progressWriter writes the progress a run's handlers report: the latest
// report of each job, coalesced, at most every ProgressInterval, in one
// statement for all jobs, on the pool. run writes until its ctx ends (the
// run's heartbeat context, which outlives every handler), then once more.
type progressWriter struct {
	q       *dbgen.Queries
	db      sqlname.DBTX // the pool, names rewritten
	channel string       // the progress channel
	logger  *slog.Logger
	every   time.Duration

	mu      sync.Mutex
	pending map[JobID]reported
	// inflight holds the reports a flush has taken from pending and not
	// yet written (nil while none is under way).
	inflight map[JobID]reported
	kick     chan struct{}
	// writing is held by a flush from taking its reports to writing them,
	// so that writes land in the order of the reports: a job's last
	// report, written as its handler returns, once raced a periodic
	// write of its earlier one, which committed last and stayed.
	writing sync.Mutex
}

func newProgressWriter(q *dbgen.Queries, db sqlname.DBTX, names sqlname.Names, logger *slog.Logger) *progressWriter {
	return &progressWriter{q: q, db: db, channel: names.ProgressChannel(), logger: logger, every: ProgressInterval,
		pending: map[JobID]reported{}, kick: make(chan struct{}, 1)}
}

func (p *progressWriter) report(id JobID, fraction float64, note string) {
	p.mu.Lock()
	p.pending[id] = reported{fraction, note}
	p.mu.Unlock()
	signal(p.kick)
}

// run writes what is reported, at most every interval, until ctx ends;
// then it writes what is left and returns.
func (p *progressWriter) run(ctx context.Context) {
	pause := time.NewTimer(0)
	defer pause.Stop()
	prune := time.NewTicker(progressPruneEvery)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
			p.flush(context.WithoutCancel(ctx), nil)
			return
		case <-prune.C:
			if err := pruneProgress(ctx, p.q, p.db); err != nil && ctx.Err() == nil {
				p.logger.Warn("pgq: pruning the progress of finished jobs failed", "err", err)
			}
			continue
		case <-p.kick:
		}
		p.flush(ctx, nil)
		resetTimer(pause, p.every)
		select {
		case <-ctx.Done():
		case <-pause.C:
		}
	}
}

// finished writes the pending report of the job whose handler has just
// returned, if any, so that its last progress is written before its
// outcome (which deletes its row, after which a write is dropped). ctx is
// the handler's: the write is not cut off by its end.
//
// When a flush under way has taken the job's last report, finished waits
// for that write instead: returning at once, it let the outcome delete the
// job's row before the write, which then dropped the last report and left
// an earlier one.
func (p *progressWriter) finished(ctx context.Context, id JobID) {
	p.mu.Lock()
	_, ok := p.pending[id]
	_, writing := p.inflight[id]
	p.mu.Unlock()
	switch {
	case ok:
		p.flush(context.WithoutCancel(ctx), &id)
	case writing:
		p.writing.Lock() // held by that flush until its write is done
		p.writing.Unlock()
	}
}

// flush writes the pending reports (only id's, when id is not nil).
func (p *progressWriter) flush(ctx context.Context, id *JobID) {
	p.writing.Lock()
	defer p.writing.Unlock()
	p.mu.Lock()
	var batch map[JobID]reported
	if id != nil {
		r, ok := p.pending[*id]
		if !ok {
			p.mu.Unlock()
			return
		}
		delete(p.pending, *id)
		batch = map[JobID]reported{*id: r}
	} else {
		batch, p.pending = p.pending, map[JobID]reported{}
	}
	if len(batch) == 0 {
		p.mu.Unlock()
		return
	}
	p.inflight = batch
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.inflight = nil
		p.mu.Unlock()
	}()
	ids := slices.Sorted(func(yield func(JobID) bool) {
		for id := range batch {
			if !yield(id) {
				return
			}
		}
	})
	for chunk := range slices.Chunk(ids, maxProgressBatch) {
		if err := p.write(ctx, chunk, batch); err != nil {
			p.logger.Warn("pgq: writing job progress failed; dropped", "jobs", len(chunk), "err", err)
		}
	}
}

func (p *progressWriter) write(ctx context.Context, ids []JobID, batch map[JobID]reported) error {
	ctx, cancel := context.WithTimeout(ctx, progressWriteTimeout)
	defer cancel()
	arg := dbgen.ProgressWriteParams{Ids: make([]int64, len(ids)), Fractions: make([]float64, len(ids)),
		Notes: make([]string, len(ids))}
	for i, id := range ids {
		r := batch[id]
		arg.Ids[i], arg.Fractions[i], arg.Notes[i] = int64(id), r.fraction, r.note
	}
	written, err := p.q.ProgressWrite(ctx, p.db, arg)
	if err != nil || len(written) == 0 {
		return interpretError(err)
	}
	return notifyProgress(ctx, p.q, p.db, p.channel, written)
}

// notifyProgress announces on the progress channel that the progress of
// ids changed, maxEventIDs ids per notification.
func notifyProgress(ctx context.Context, q *dbgen.Queries, db sqlname.DBTX, channel string, ids []int64) error {
	for chunk := range slices.Chunk(ids, maxEventIDs) {
		ev := progressEvent{IDs: make([]JobID, len(chunk))}
		for i, id := range chunk {
			ev.IDs[i] = JobID(id)
		}
		payload, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		if err := q.Notify(ctx, db, dbgen.NotifyParams{Channel: channel, Payload: string(payload)}); err != nil {
			return interpretError(err)
		}
	}
	return nil
}

// pruneProgress deletes the progress of jobs that finished more than
// progressRetention ago, a batch at a time.
func pruneProgress(ctx context.Context, q *dbgen.Queries, db sqlname.DBTX) error {
	for {
		n, err := q.ProgressPrune(ctx, db, dbgen.ProgressPruneParams{
			OlderThanS: progressRetention.Seconds(), BatchSize: 1000})
		if err != nil || n < 1000 {
			return interpretError(err)
		}
	}
}

// readProgress returns the progress of ids that have reported any.
func readProgress(ctx context.Context, q *dbgen.Queries, db sqlname.DBTX, ids []JobID) (map[JobID]Progress, error) {
	rows, err := q.ProgressGet(ctx, db, toInt64s(ids))
	if err != nil {
		return nil, interpretError(err)
	}
	out := make(map[JobID]Progress, len(rows))
	for _, r := range rows {
		p := progressFromRow(r)
		out[p.JobID] = p
	}
	return out, nil
}

// Progress returns the latest progress job id has reported: Updated is
// zero when it has reported none (or it is unknown). The progress of a
// finished job stays readable for about an hour.
func (q *Queries) Progress(ctx context.Context, id JobID) (Progress, error) {
	if q.cfg.err != nil {
		return Progress{}, q.cfg.err
	}
	m, err := readProgress(ctx, q.q, q.db, []JobID{id})
	if err != nil {
		return Progress{}, fmt.Errorf("pgq: progress of job %d: %w", id, err)
	}
	if p, ok := m[id]; ok {
		return p, nil
	}
	return Progress{JobID: id}, nil
}
