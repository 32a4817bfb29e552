package pgq

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/pgq-dev/pgq/dbgen"
)

// ErrInvalidCursor is returned (wrapped, errors.Is-able) by ListJobs for a
// cursor it did not make, that was changed, or that belongs to another
// filter. A web handler answers it with 400 Bad Request.
var ErrInvalidCursor = errors.New("pgq: invalid cursor")

// Limits of ListJobs and of the bulk actions.
const (
	// DefaultListLimit is the page size of ListJobs when JobFilter.Limit is 0.
	DefaultListLimit = 50
	// MaxListLimit is the largest page ListJobs returns.
	MaxListLimit = 1000
	// ListPayloadPreview is how many bytes of each payload ListJobs
	// returns (JobInfo.PayloadSize has the full size; GetJob the payload).
	ListPayloadPreview = 256
	// DefaultBulkBatch is how many jobs a bulk action changes per
	// statement (see WithBulkBatchSize).
	DefaultBulkBatch = 1000
	// MaxBulkBatch bounds WithBulkBatchSize.
	MaxBulkBatch = 10000
)

// JobFilter selects jobs of the job table (queued, running or held) for
// ListJobs and the bulk actions (CancelJobs, DeleteJobs, RequeueJobs). Its
// zero value matches every job; each set field narrows the match.
type JobFilter struct {
	// Entrypoints matches jobs of any of these entrypoints.
	Entrypoints []string
	// Statuses matches jobs in any of these statuses: StatusQueued,
	// StatusPicked (running) or StatusFailed (held); finished jobs are
	// no longer in the job table (see GetJob and JobHistory for them).
	Statuses []Status
	// IDs matches these jobs.
	IDs []JobID
	// DedupeKey matches the job holding this dedupe key. A key is held
	// only while its job is queued or running (PGQueuer's rule), so with a
	// DedupeKey only queued and running jobs match.
	DedupeKey string
	// After and Before bound the jobs' creation time: After <= created <
	// Before; a zero time leaves that side open.
	After, Before time.Time
	// Limit is ListJobs' page size: 0 for DefaultListLimit, at most
	// MaxListLimit. The bulk actions ignore it (they take every match).
	Limit int
	// Cursor is ListJobs' position: "" for the first page, then the
	// JobPage.Next of the page before. It is opaque, and valid only with
	// the filter it was made for. The bulk actions ignore it.
	Cursor string
}

// JobPage is one page of ListJobs.
type JobPage struct {
	// Jobs are the jobs of the page, newest (highest id) first. Their
	// Payload holds at most ListPayloadPreview bytes (PayloadSize is the
	// whole payload's).
	Jobs []JobInfo
	// Next is the cursor of the next page; "" on the last page.
	Next string
}

var (
	minTime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
)

// normalized is a filter checked and put in the form the statements take.
type normalized struct {
	statuses      []dbgen.PgqueuerStatus
	entrypoints   []string
	dedupeKey     string
	ids           []int64
	after, before time.Time
	none          bool // the filter matches nothing (e.g. a dedupe key and only held jobs)
}

// normalize checks f and returns it as the statements take it. allowed are
// the statuses the caller may match; when f names none, all of them.
func (f JobFilter) normalize(allowed ...Status) (normalized, error) {
	n := normalized{entrypoints: slices.Clone(f.Entrypoints), dedupeKey: f.DedupeKey, after: minTime, before: maxTime}
	for _, e := range f.Entrypoints {
		if e == "" {
			return n, errors.New("job filter: empty entrypoint")
		}
	}
	statuses := f.Statuses
	for _, s := range statuses {
		if !slices.Contains(allowed, s) {
			want := make([]string, len(allowed))
			for i, a := range allowed {
				want[i] = string(a)
			}
			return n, fmt.Errorf("job filter: status %q: want one of %s", s, strings.Join(want, ", "))
		}
	}
	if len(statuses) == 0 {
		statuses = allowed
	}
	if f.DedupeKey != "" {
		statuses = slices.DeleteFunc(slices.Clone(statuses), func(s Status) bool { return s != StatusQueued && s != StatusPicked })
		n.none = len(statuses) == 0
	}
	for _, s := range statuses {
		if !slices.Contains(n.statuses, dbgen.PgqueuerStatus(s)) {
			n.statuses = append(n.statuses, dbgen.PgqueuerStatus(s))
		}
	}
	slices.Sort(n.statuses)
	if len(n.statuses) == len(liveStatuses) {
		n.statuses = nil // all of them: the condition folds away
	}
	if !f.After.IsZero() {
		n.after = f.After
	}
	if !f.Before.IsZero() {
		n.before = f.Before
	}
	if !n.after.Before(n.before) {
		n.none = true
	}
	slices.Sort(n.entrypoints)
	n.entrypoints = slices.Compact(n.entrypoints)
	n.ids = toInt64s(sortedIDs(f.IDs))
	// Empty, not nil: a nil slice would be passed as NULL.
	if n.statuses == nil {
		n.statuses = []dbgen.PgqueuerStatus{}
	}
	if n.entrypoints == nil {
		n.entrypoints = []string{}
	}
	return n, nil
}

// liveStatuses are the statuses of rows of the job table.
var liveStatuses = []Status{StatusQueued, StatusPicked, StatusFailed}

// fingerprint identifies the filter a cursor belongs to.
func (n normalized) fingerprint() uint32 {
	h := crc32.NewIEEE()
	for _, s := range n.statuses {
		fmt.Fprintf(h, "s%q", s)
	}
	for _, e := range n.entrypoints {
		fmt.Fprintf(h, "e%q", e)
	}
	for _, id := range n.ids {
		fmt.Fprintf(h, "i%d", id)
	}
	fmt.Fprintf(h, "d%q a%d b%d", n.dedupeKey, n.after.UnixMicro(), n.before.UnixMicro())
	return h.Sum32()
}

// cursorVersion is the first byte of every cursor.
const cursorVersion = 1

// encodeCursor makes the opaque cursor of the page after the job id:
// version, id, the filter's fingerprint and a checksum of them, in
// unpadded URL-safe base64.
func encodeCursor(id int64, fp uint32) string {
	b := make([]byte, 0, 17)
	b = append(b, cursorVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(id))
	b = binary.BigEndian.AppendUint32(b, fp)
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, cursorTable))
	return base64.RawURLEncoding.EncodeToString(b)
}

// cursorTable is the checksum of cursors: another polynomial than the
// fingerprint's, so that neither can stand in for the other.
var cursorTable = crc32.MakeTable(crc32.Castagnoli)

// decodeCursor returns the id a cursor made by encodeCursor for fp holds.
func decodeCursor(c string, fp uint32) (int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) != 17 || b[0] != cursorVersion ||
		binary.BigEndian.Uint32(b[13:]) != crc32.Checksum(b[:13], cursorTable) {
		return 0, fmt.Errorf("%w %q: not a cursor ListJobs made", ErrInvalidCursor, truncate(c, 40))
	}
	id := int64(binary.BigEndian.Uint64(b[1:9]))
	if id <= 0 {
		return 0, fmt.Errorf("%w %q: id %d out of range", ErrInvalidCursor, truncate(c, 40), id)
	}
	if binary.BigEndian.Uint32(b[9:13]) != fp {
		return 0, fmt.Errorf("%w %q: made for another filter", ErrInvalidCursor, truncate(c, 40))
	}
	return id, nil
}

// ListJobs returns a page of the jobs in the job table (queued, running
// and held) that match f, newest first, and the cursor of the next page.
// Pages are cut by job id (keyset pagination, never OFFSET): a page shows
// the matching jobs below the last id of the page before, so jobs that are
// claimed, finished or enqueued meanwhile never shift the pages (a job
// finished meanwhile is simply not on its page any more; a job enqueued
// meanwhile is on the first page). A cursor that was changed, or made for
// another filter, gives an error matching ErrInvalidCursor.
func (q *Queries) ListJobs(ctx context.Context, f JobFilter) (JobPage, error) {
	if q.cfg.err != nil {
		return JobPage{}, q.cfg.err
	}
	n, err := f.normalize(liveStatuses...)
	if err != nil {
		return JobPage{}, fmt.Errorf("pgq: list jobs: %w", err)
	}
	limit := f.Limit
	switch {
	case limit == 0:
		limit = DefaultListLimit
	case limit < 0 || limit > MaxListLimit:
		return JobPage{}, fmt.Errorf("pgq: list jobs: limit %d: want 1 to %d", limit, MaxListLimit)
	}
	fp := n.fingerprint()
	before := int64(math.MaxInt64)
	if f.Cursor != "" {
		if before, err = decodeCursor(f.Cursor, fp); err != nil {
			return JobPage{}, err
		}
	}
	if n.none {
		return JobPage{}, nil
	}
	rows, err := q.q.JobsList(ctx, q.db, dbgen.JobsListParams{
		PreviewBytes: ListPayloadPreview, BeforeID: before,
		Statuses: n.statuses, Entrypoints: n.entrypoints, DedupeKey: n.dedupeKey, Ids: n.ids,
		CreatedAfter: n.after, CreatedBefore: n.before, MaxRows: int32(limit + 1),
	})
	if err != nil {
		return JobPage{}, fmt.Errorf("pgq: list jobs: %w", interpretError(err))
	}
	var page JobPage
	if len(rows) > limit {
		rows = rows[:limit]
		page.Next = encodeCursor(rows[limit-1].ID, fp)
	}
	page.Jobs = make([]JobInfo, len(rows))
	for i, r := range rows {
		page.Jobs[i] = jobInfoFromListRow(r)
	}
	return page, nil
}

// BulkOption configures CancelJobs, DeleteJobs and RequeueJobs:
// WithBulkBatchSize, WithBulkProgress.
type BulkOption interface{ applyBulk(*bulkConfig) }

type bulkOption func(*bulkConfig)

func (o bulkOption) applyBulk(c *bulkConfig) { o(c) }

type bulkConfig struct {
	batch    int
	progress func(int64)
	err      error
}

// WithBulkBatchSize sets how many jobs a bulk action changes per statement,
// from 1 to MaxBulkBatch (default DefaultBulkBatch): the most row locks one
// of its statements holds.
func WithBulkBatchSize(n int) BulkOption {
	return bulkOption(func(c *bulkConfig) {
		if n < 1 || n > MaxBulkBatch {
			c.err = fmt.Errorf("pgq: bulk batch size %d: want 1 to %d", n, MaxBulkBatch)
			return
		}
		c.batch = n
	})
}

// WithBulkProgress has a bulk action call fn after each batch with how many
// jobs it has changed so far (from the action's goroutine).
func WithBulkProgress(fn func(touched int64)) BulkOption {
	return bulkOption(func(c *bulkConfig) { c.progress = fn })
}

// CancelJobs cancels the queued and running jobs that match f (f.Statuses,
// when set, may name StatusQueued and StatusPicked): their rows are removed
// and they are logged 'canceled', as MarkJobAsCancelled does, and the
// workers running them get a cancellation event. It returns how many it
// canceled.
//
// Like every bulk action it works in batches of DefaultBulkBatch jobs (see
// WithBulkBatchSize), each its own statement (its own transaction on a
// *sql.DB; on a *sql.Tx they all commit with it), walking the job table by
// id up to the highest id there when it starts: it never holds the locks
// of more than one batch, workers keep claiming and finishing jobs
// meanwhile, and jobs enqueued after it started are left alone. A job that
// changes status meanwhile (a queued job claimed, a running one finished)
// is acted on only if its new status still matches. An error stops it:
// the batches before stay done, and the count says how many.
func (q *Queries) CancelJobs(ctx context.Context, f JobFilter, opts ...BulkOption) (int64, error) {
	return q.bulk(ctx, "cancel jobs", f, []Status{StatusQueued, StatusPicked}, opts,
		func(ctx context.Context, ids []int64, statuses []dbgen.PgqueuerStatus) (int64, error) {
			rows, err := q.q.JobsCancelMatching(ctx, q.db, dbgen.JobsCancelMatchingParams{Ids: ids, Statuses: statuses})
			if err != nil {
				return 0, err
			}
			var running []JobID
			for _, r := range rows {
				if r.Running {
					running = append(running, JobID(r.ID))
				}
			}
			if err := q.notifyCancelled(ctx, running); err != nil {
				return int64(len(rows)), err
			}
			return int64(len(rows)), nil
		})
}

// DeleteJobs deletes the queued jobs that match f and logs them
// 'deleted'; it returns how many it deleted. f.Statuses may name
// StatusQueued and StatusFailed (held jobs are deleted only when named);
// running jobs are canceled, not deleted (CancelJobs). It works in
// batches, like CancelJobs.
func (q *Queries) DeleteJobs(ctx context.Context, f JobFilter, opts ...BulkOption) (int64, error) {
	allowed := []Status{StatusQueued, StatusFailed}
	if len(f.Statuses) == 0 {
		allowed = allowed[:1]
	}
	return q.bulk(ctx, "delete jobs", f, allowed, opts,
		func(ctx context.Context, ids []int64, statuses []dbgen.PgqueuerStatus) (int64, error) {
			return q.q.JobsDeleteMatching(ctx, q.db, dbgen.JobsDeleteMatchingParams{Ids: ids, Statuses: statuses})
		})
}

// RequeueJobs puts the held (failed) jobs that match f (f.Statuses, when
// set, may name only StatusFailed) back in the queue, due now with a fresh
// set of attempts, as Requeue does; it returns how many it requeued. It
// works in batches, like CancelJobs.
func (q *Queries) RequeueJobs(ctx context.Context, f JobFilter, opts ...BulkOption) (int64, error) {
	return q.bulk(ctx, "requeue jobs", f, []Status{StatusFailed}, opts,
		func(ctx context.Context, ids []int64, _ []dbgen.PgqueuerStatus) (int64, error) {
			rows, err := q.q.JobsRequeue(ctx, q.db, ids)
			return int64(len(rows)), err
		})
}

// bulk runs act on the jobs matching f, batch by batch, in id order.
func (q *Queries) bulk(ctx context.Context, what string, f JobFilter, allowed []Status, opts []BulkOption,
	act func(ctx context.Context, ids []int64, statuses []dbgen.PgqueuerStatus) (int64, error)) (int64, error) {
	c := bulkConfig{batch: DefaultBulkBatch}
	for _, o := range opts {
		if o != nil {
			o.applyBulk(&c)
		}
	}
	if q.cfg.err != nil {
		return 0, q.cfg.err
	}
	if c.err != nil {
		return 0, c.err
	}
	n, err := f.normalize(allowed...)
	if err != nil {
		return 0, fmt.Errorf("pgq: %s: %w", what, err)
	}
	if n.none {
		return 0, nil
	}
	var statuses []dbgen.PgqueuerStatus
	for _, s := range allowed { // in this order: queued before picked
		if len(n.statuses) == 0 || slices.Contains(n.statuses, dbgen.PgqueuerStatus(s)) {
			statuses = append(statuses, dbgen.PgqueuerStatus(s))
		}
	}
	maxID, err := q.q.JobsMaxID(ctx, q.db)
	if err != nil {
		return 0, fmt.Errorf("pgq: %s: %w", what, interpretError(err))
	}
	// One status at a time: each gets its partial index. Queued before
	// picked: a queued job claimed while the first pass runs is then
	// found by the second.
	var touched int64
	for _, status := range statuses {
		one := []dbgen.PgqueuerStatus{status}
		for after := int64(0); after < maxID; {
			ids, err := q.q.JobsMatching(ctx, q.db, dbgen.JobsMatchingParams{
				AfterID: after, MaxID: maxID, Statuses: one, Entrypoints: n.entrypoints,
				DedupeKey: n.dedupeKey, Ids: n.ids, CreatedAfter: n.after, CreatedBefore: n.before, BatchSize: int32(c.batch),
			})
			if err != nil {
				return touched, fmt.Errorf("pgq: %s: after %d of them: %w", what, touched, interpretError(err))
			}
			if len(ids) == 0 {
				break
			}
			k, err := act(ctx, ids, one)
			touched += k
			if err != nil {
				return touched, fmt.Errorf("pgq: %s: after %d of them: %w", what, touched, interpretError(err))
			}
			if c.progress != nil {
				c.progress(touched)
			}
			if len(ids) < c.batch {
				break
			}
			after = ids[len(ids)-1]
		}
	}
	return touched, nil
}

// notifyCancelled sends the cancellation events of running jobs, one per
// maxEventIDs ids.
func (q *Queries) notifyCancelled(ctx context.Context, ids []JobID) error {
	for chunk := range slices.Chunk(ids, maxEventIDs) {
		payload, err := json.Marshal(newCancellationEvent(q.names.Channel(), chunk))
		if err != nil {
			return err
		}
		if err := q.q.Notify(ctx, q.db, dbgen.NotifyParams{Channel: q.names.Channel(), Payload: string(payload)}); err != nil {
			return fmt.Errorf("notify (%d bytes): %w", len(payload), interpretError(err))
		}
	}
	return nil
}
