package bench

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgq-dev/pgq"
)

// Interval is one row of a long throughput run (ThroughputConfig.ReportEvery):
// what the queue did over the interval, and what the tables and the client
// held at its end.
type Interval struct {
	// EndSeconds is the interval's end, in seconds from the start of the
	// measured span (after the warm-up); Seconds is its length.
	EndSeconds         float64 `json:"end_s"`
	Seconds            float64 `json:"seconds"`
	WorkedJobsPerSec   float64 `json:"worked_jobs_per_sec"`
	EnqueuedJobsPerSec float64 `json:"enqueued_jobs_per_sec"`
	// EnqueueToStart holds the percentiles of the jobs that started in the
	// interval (paced runs only), LatencySamples their number.
	EnqueueToStart Percentiles `json:"enqueue_to_start"`
	LatencySamples int64       `json:"latency_samples"`
	Tables         TableSizes  `json:"tables"`
	// HeapInuseBytes is the client's runtime.MemStats.HeapInuse and
	// RSSBytes its resident set, both at the interval's end.
	HeapInuseBytes int64 `json:"heap_inuse_bytes"`
	RSSBytes       int64 `json:"rss_bytes"`
	// LiveHeapBytes is the client's runtime.MemStats.HeapAlloc right after
	// a garbage collection at the interval's end: what the client still
	// holds, which HeapInuse overstates by the garbage not yet collected.
	// RunCheckBytes is the part of it that the harness's check for jobs
	// run twice holds, a bit per job so far, which grows by design (0 when
	// the run has no check). Goroutines is runtime.NumGoroutine then.
	LiveHeapBytes int64  `json:"live_heap_bytes"`
	RunCheckBytes int64  `json:"run_check_bytes"`
	Goroutines    int    `json:"goroutines"`
	LoadAvg       string `json:"load_avg"` // the machine's 1, 5 and 15 minute load
}

// TableSizes are the sizes of the job table (pgqueuer) and the log
// (pgqueuer_log): all of it (pg_total_relation_size), its heap
// (pg_relation_size) and its indexes (pg_indexes_size), in bytes, and the
// live and dead rows the statistics collector counts.
type TableSizes struct {
	JobTotalBytes  int64 `json:"job_total_bytes"`
	JobHeapBytes   int64 `json:"job_heap_bytes"`
	JobIndexBytes  int64 `json:"job_index_bytes"`
	JobLiveRows    int64 `json:"job_live_rows"`
	JobDeadRows    int64 `json:"job_dead_rows"`
	LogTotalBytes  int64 `json:"log_total_bytes"`
	LogHeapBytes   int64 `json:"log_heap_bytes"`
	LogIndexBytes  int64 `json:"log_index_bytes"`
	LogLiveRows    int64 `json:"log_live_rows"`
	LogDeadRows    int64 `json:"log_dead_rows"`
	LogAutovacuums int64 `json:"log_autovacuums"` // autovacuum's runs on the log so far
}

// readTableSizes reads TableSizes.
func readTableSizes(ctx context.Context, db *sql.DB) (TableSizes, error) {
	var s TableSizes
	err := db.QueryRowContext(ctx, sqlTableSizes).Scan(&s.JobTotalBytes, &s.JobHeapBytes, &s.JobIndexBytes,
		&s.JobLiveRows, &s.JobDeadRows, &s.LogTotalBytes, &s.LogHeapBytes, &s.LogIndexBytes,
		&s.LogLiveRows, &s.LogDeadRows, &s.LogAutovacuums)
	if err != nil {
		return s, fmt.Errorf("reading table sizes: %w", err)
	}
	return s, nil
}

// Span is what the queue did over a part of the run.
type Span struct {
	WorkedJobsPerSec float64     `json:"worked_jobs_per_sec"`
	EnqueueToStart   Percentiles `json:"enqueue_to_start"`
	LatencySamples   int64       `json:"latency_samples"`
}

// Decay compares the first tenth of a long run (its measured span) with
// its last tenth: a queue that does not decay keeps both ratios near 1.
// The growth figures are each relation's size at the last interval's end
// over its size at the end of the interval that ends at half time or
// first after it: near 1 when the table has stopped growing.
type Decay struct {
	FirstTenth  Span    `json:"first_tenth"`
	LastTenth   Span    `json:"last_tenth"`
	WorkedRatio float64 `json:"worked_ratio"` // last tenth's rate ÷ first tenth's
	P99Ratio    float64 `json:"p99_ratio"`    // last tenth's enqueue → start p99 ÷ first tenth's (paced runs)

	JobTotalGrowthLastHalf  float64 `json:"job_total_growth_last_half"`
	JobIndexGrowthLastHalf  float64 `json:"job_index_growth_last_half"`
	LogTotalGrowthLastHalf  float64 `json:"log_total_growth_last_half"`
	HeapInuseGrowthLastHalf float64 `json:"heap_inuse_growth_last_half"`
	// LiveHeapGrowthLastHalf leaves out the check for jobs run twice,
	// which grows by design (Interval.RunCheckBytes).
	LiveHeapGrowthLastHalf float64 `json:"live_heap_growth_last_half"`
}

// startTimes pairs each job's enqueue commit with its handler's start
// (either may be seen first) and counts commit → start in histograms: the
// whole run's, the current interval's, and the first and last tenths'.
// It holds only the jobs committed and not started yet (and the few that
// started before their producer saw the commit), so its memory stays flat
// however long the run.
type startTimes struct {
	measured    func(time.Time) bool // a commit at this time counts
	first, last [2]time.Time         // the first and last tenth, [from, to)

	mu       sync.Mutex
	pending  map[pgq.JobID]time.Time // commit time of jobs not started yet
	early    map[pgq.JobID]time.Time // start time of jobs whose commit was not seen yet
	total    histogram               // the samples of the intervals taken
	interval histogram               // the samples since the last take
	tenths   [2]histogram            // first, last
	reported bool                    // a reporter takes the intervals (beginIntervals)
}

func newStartTimes(measured func(time.Time) bool, warmed, deadline time.Time) *startTimes {
	s := &startTimes{
		measured: measured,
		pending:  map[pgq.JobID]time.Time{},
		early:    map[pgq.JobID]time.Time{},
	}
	s.first, s.last = tenthSpans(warmed, deadline)
	return s
}

// tenthSpans returns the first and last tenth of [from, to).
func tenthSpans(from, to time.Time) (first, last [2]time.Time) {
	tenth := to.Sub(from) / 10
	return [2]time.Time{from, from.Add(tenth)}, [2]time.Time{to.Add(-tenth), to}
}

func within(t time.Time, span [2]time.Time) bool { return !t.Before(span[0]) && t.Before(span[1]) }

// committed notes that the jobs ids were committed at t.
func (s *startTimes) committed(ids []pgq.JobID, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if started, ok := s.early[id]; ok {
			// The handler started before the producer read the commit's
			// reply: counts as 0.
			delete(s.early, id)
			if s.measured(t) {
				s.record(0, started)
			}
			continue
		}
		s.pending[id] = t
	}
}

// started notes that job id's handler started at t.
func (s *startTimes) started(id pgq.JobID, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.pending[id]
	if !ok {
		s.early[id] = t
		return
	}
	delete(s.pending, id)
	if s.measured(c) {
		s.record(t.Sub(c), t)
	}
}

// record counts d, of a job that started at t. s.mu is held.
func (s *startTimes) record(d time.Duration, t time.Time) {
	d = max(d, 0)
	s.interval.add(d)
	for i, span := range [2][2]time.Time{s.first, s.last} {
		if within(t, span) {
			s.tenths[i].add(d)
		}
	}
}

// beginIntervals drops what was counted so far (the warm-up's last
// moments) and has totals count only the intervals taken from now on: a
// handler start noted after the last take (the workers stop at the
// deadline, a moment after the reporter took its last row) then counts in
// neither, and the intervals' samples add up to the run's.
func (s *startTimes) beginIntervals() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.interval, s.reported = histogram{}, true
}

// takeInterval returns the current interval's percentiles and count, adds
// its samples to the run's, and starts the next interval.
func (s *startTimes) takeInterval() (Percentiles, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, n := s.interval.percentiles(), s.interval.n
	s.total.merge(&s.interval)
	s.interval = histogram{}
	return p, n
}

// totals returns the whole run's and the tenths' percentiles and counts:
// without a reporter (beginIntervals), every sample; with one, those of
// the intervals it took.
func (s *startTimes) totals() (all Percentiles, n int64, first, last Span) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.reported {
		s.total.merge(&s.interval)
		s.interval = histogram{}
	}
	first = Span{EnqueueToStart: s.tenths[0].percentiles(), LatencySamples: s.tenths[0].n}
	last = Span{EnqueueToStart: s.tenths[1].percentiles(), LatencySamples: s.tenths[1].n}
	return s.total.percentiles(), s.total.n, first, last
}

// held is how many jobs s holds (pending and early): the tests check that
// it does not grow with the run.
func (s *startTimes) held() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending) + len(s.early)
}

// workCounts counts the jobs worked and enqueued in the measured span, and
// those worked in its first and last tenths.
type workCounts struct {
	worked, enqueued atomic.Int64
	tenths           [2]atomic.Int64
}

// reporter takes a row every interval of a long run and writes it out.
type reporter struct {
	db     *sql.DB
	every  time.Duration
	out    io.Writer // nil: rows are only kept
	counts *workCounts
	starts *startTimes // nil in unpaced runs
	runs   *runs       // the check for jobs run twice; nil: none
	rows   []Interval
}

// run takes a row every r.every from warmed until deadline (the last one
// maybe shorter) and stops early when ctx ends.
func (r *reporter) run(ctx context.Context, warmed, deadline time.Time) error {
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(time.Until(warmed)):
	}
	if r.out != nil {
		fmt.Fprintln(r.out, intervalHeader)
	}
	// The counts of the warm-up are not the first interval's.
	var worked, enqueued int64
	if r.starts != nil {
		r.starts.beginIntervals()
	}
	for from := warmed; from.Before(deadline); {
		to := from.Add(r.every)
		if to.After(deadline) {
			to = deadline
		}
		t := time.NewTimer(time.Until(to))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		w, e := r.counts.worked.Load(), r.counts.enqueued.Load()
		row := Interval{EndSeconds: seconds(to.Sub(warmed)), Seconds: seconds(to.Sub(from)),
			WorkedJobsPerSec: rate(w-worked, to.Sub(from)), EnqueuedJobsPerSec: rate(e-enqueued, to.Sub(from)),
			LoadAvg: loadAvg()}
		worked, enqueued = w, e
		if r.starts != nil {
			row.EnqueueToStart, row.LatencySamples = r.starts.takeInterval()
		}
		var err error
		if row.Tables, err = readTableSizes(ctx, r.db); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		row.HeapInuseBytes, row.RSSBytes = heapInuse(), currentRSS()
		row.LiveHeapBytes, row.Goroutines = liveHeap()
		if r.runs != nil {
			row.RunCheckBytes = r.runs.bytes()
		}
		r.rows = append(r.rows, row)
		if r.out != nil {
			fmt.Fprintln(r.out, row.line())
		}
		from = to
	}
	return nil
}

// intervalHeader names the columns of Interval.line. live_mb is the live
// heap less the check for jobs run twice (Interval.RunCheckBytes).
const intervalHeader = "    end_s  worked/s     enq/s  p50_ms  p99_ms" +
	"  job_mb(heap+idx)     job_live/dead  log_mb(heap+idx)      log_live/dead  log_av  heap_mb  live_mb  gor  rss_mb  load"

// line is the row as one line under intervalHeader.
func (r Interval) line() string {
	t := r.Tables
	sizes := func(total, heap, index int64) string {
		return fmt.Sprintf("%.1f(%.1f+%.1f)", mb(total), mb(heap), mb(index))
	}
	rows := func(live, dead int64) string { return fmt.Sprintf("%d/%d", live, dead) }
	load, _, _ := strings.Cut(r.LoadAvg, " ")
	return fmt.Sprintf("%9.0f %9.1f %9.1f %7.2f %7.2f  %-16s %16s  %-16s %18s %7d %8.1f %8.1f %4d %7.1f  %s",
		r.EndSeconds, r.WorkedJobsPerSec, r.EnqueuedJobsPerSec, r.EnqueueToStart.P50, r.EnqueueToStart.P99,
		sizes(t.JobTotalBytes, t.JobHeapBytes, t.JobIndexBytes), rows(t.JobLiveRows, t.JobDeadRows),
		sizes(t.LogTotalBytes, t.LogHeapBytes, t.LogIndexBytes), rows(t.LogLiveRows, t.LogDeadRows),
		t.LogAutovacuums, mb(r.HeapInuseBytes), mb(r.LiveHeapBytes-r.RunCheckBytes), r.Goroutines, mb(r.RSSBytes), load)
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// decay compares the first and last tenths of a run of length d, and the
// sizes of the last half of rows.
func decay(counts *workCounts, starts *startTimes, d time.Duration, rows []Interval) Decay {
	tenth := d / 10
	var dc Decay
	if starts != nil {
		_, _, dc.FirstTenth, dc.LastTenth = starts.totals()
	}
	dc.FirstTenth.WorkedJobsPerSec = rate(counts.tenths[0].Load(), tenth)
	dc.LastTenth.WorkedJobsPerSec = rate(counts.tenths[1].Load(), tenth)
	dc.WorkedRatio = ratio(dc.LastTenth.WorkedJobsPerSec, dc.FirstTenth.WorkedJobsPerSec)
	dc.P99Ratio = ratio(dc.LastTenth.EnqueueToStart.P99, dc.FirstTenth.EnqueueToStart.P99)
	if len(rows) > 0 {
		half := seconds(d / 2)
		mid := rows[len(rows)-1]
		for _, r := range rows {
			if r.EndSeconds >= half {
				mid = r
				break
			}
		}
		end := rows[len(rows)-1]
		dc.JobTotalGrowthLastHalf = ratio(float64(end.Tables.JobTotalBytes), float64(mid.Tables.JobTotalBytes))
		dc.JobIndexGrowthLastHalf = ratio(float64(end.Tables.JobIndexBytes), float64(mid.Tables.JobIndexBytes))
		dc.LogTotalGrowthLastHalf = ratio(float64(end.Tables.LogTotalBytes), float64(mid.Tables.LogTotalBytes))
		dc.HeapInuseGrowthLastHalf = ratio(float64(end.HeapInuseBytes), float64(mid.HeapInuseBytes))
		dc.LiveHeapGrowthLastHalf = ratio(float64(end.LiveHeapBytes-end.RunCheckBytes), float64(mid.LiveHeapBytes-mid.RunCheckBytes))
	}
	return dc
}

// ratio is a ÷ b to three decimals, 0 when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return round3(a / b)
}

// heapInuse is the client's runtime.MemStats.HeapInuse.
//
// Not inlined: runtime.MemStats is about 5 KB, and a caller that inlined
// it would carry that in its own frame. The drain's handlers call
// deciles.mark for every job, which reads the heap ten times a run; with
// the struct in its frame every handler goroutine grew its stack (a copy
// to a new 8 KB stack, and the old one freed) for each job.
//
//go:noinline
func heapInuse() int64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// liveHeap collects garbage and returns the client's heap that is still
// reachable (runtime.MemStats.HeapAlloc) and its goroutines. A collection
// once a report row costs little (the client's heap is a few megabytes),
// and without it a heap that only holds more garbage between collections
// looks like a leak.
//
//go:noinline
func liveHeap() (bytes int64, goroutines int) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc), runtime.NumGoroutine()
}

// currentRSS is the client's resident set size now, from /proc/self/statm
// (0 where that cannot be read).
func currentRSS() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * int64(os.Getpagesize())
}

// heapPeak samples the client's HeapInuse every interval until stop is
// called, which returns the largest seen (and may be called again).
func heapPeak(interval time.Duration) (stop func() int64) {
	done := make(chan struct{})
	var peak atomic.Int64
	peak.Store(heapInuse())
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				peak.Store(max(peak.Load(), heapInuse()))
			}
		}
	})
	var once sync.Once
	return func() int64 {
		once.Do(func() {
			close(done)
			wg.Wait()
			peak.Store(max(peak.Load(), heapInuse()))
		})
		return peak.Load()
	}
}
