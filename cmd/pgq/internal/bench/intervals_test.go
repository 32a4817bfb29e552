package bench

import (
	"context"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
)

// TestHistogramPercentiles: the histogram's percentiles are within a
// bucket's width (1.6 %) of the exact ones, and its largest value exact.
func TestHistogramPercentiles(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h histogram
	var ds []time.Duration
	for range 100_000 {
		// From microseconds to seconds, log-uniform.
		d := time.Duration(float64(time.Microsecond) * math.Pow(10, r.Float64()*6))
		ds = append(ds, d)
		h.add(d)
	}
	got, want := h.percentiles(), percentiles(ds)
	for _, c := range []struct {
		name      string
		got, want float64
	}{{"p50", got.P50, want.P50}, {"p90", got.P90, want.P90}, {"p99", got.P99, want.P99}} {
		if c.got < c.want*0.984 || c.got > c.want*1.016 {
			t.Errorf("%s = %v ms, exact %v ms: more than 1.6 %% off", c.name, c.got, c.want)
		}
	}
	if got.Max != want.Max || h.n != 100_000 {
		t.Errorf("max %v (exact %v), n %d", got.Max, want.Max, h.n)
	}
	for _, d := range []time.Duration{0, 1, 63, 64, 127, 128, 1000, time.Second, time.Hour, 100 * time.Hour} {
		i := bucketOf(d)
		if v := bucketValue(i); d >= histSub && d < 1<<45 && (v < d-d/histSub || v > d+d/histSub) {
			t.Errorf("bucket of %v holds values around %v", d, v)
		}
	}
	if (&histogram{}).percentiles() != (Percentiles{}) {
		t.Error("an empty histogram has percentiles")
	}
}

// TestRunsMemory: the handler's bookkeeping of a throughput run costs a
// bit per job, not a map entry (about 50 bytes), so a run of hours stays
// in flat memory; a job run twice is still counted. (The map it replaced
// held 1,000,000 jobs in about 40 MiB.)
func TestRunsMemory(t *testing.T) {
	h := HandlerConfig{Kind: HandlerNoop}
	r := newRuns()
	handler := h.handler(nil, r, nil, func() {})
	ctx := context.Background()
	before, _ := liveHeap()
	const jobs = 1_000_000
	for i := range jobs {
		if err := handler(ctx, &pgq.Job{ID: pgq.JobID(5_000_000 + i)}); err != nil {
			t.Fatal(err)
		}
	}
	after, _ := liveHeap()
	grown := after - before
	runtime.KeepAlive(r)
	if grown > 1<<20 {
		t.Errorf("the handler's bookkeeping grew by %d bytes for %d jobs: want at most 1 MiB", grown, jobs)
	}
	if r.twice.Load() != 0 {
		t.Errorf("%d jobs counted twice, want 0", r.twice.Load())
	}
	_ = handler(ctx, &pgq.Job{ID: 5_000_007})
	_ = handler(ctx, &pgq.Job{ID: 1})
	if r.twice.Load() != 1 {
		t.Errorf("%d jobs counted twice, want 1", r.twice.Load())
	}
	// A nil *runs counts nothing and costs nothing.
	if err := h.handler(nil, nil, nil, func() {})(ctx, &pgq.Job{ID: 1}); err != nil {
		t.Fatal(err)
	}
}

// TestStartTimes: commit → start is counted whichever of the two is seen
// first (a start before its commit counts as 0), only for commits in the
// measured span, into the interval and the tenth of the start; and the
// tracker holds no job once all have started.
func TestStartTimes(t *testing.T) {
	t0 := time.Now()
	warmed, deadline := t0.Add(time.Second), t0.Add(11*time.Second)
	measured := func(t time.Time) bool { return !t.Before(warmed) && t.Before(deadline) }
	s := newStartTimes(measured, warmed, deadline)

	s.committed([]pgq.JobID{1, 2}, t0.Add(500*time.Millisecond)) // warm-up: not counted
	s.started(1, t0.Add(1100*time.Millisecond))
	s.started(2, t0.Add(1200*time.Millisecond))
	s.committed([]pgq.JobID{3, 4}, t0.Add(1500*time.Millisecond)) // first tenth
	s.started(3, t0.Add(1510*time.Millisecond))                   // 10 ms
	s.started(5, t0.Add(1600*time.Millisecond))                   // before its commit: 0
	s.committed([]pgq.JobID{5}, t0.Add(1601*time.Millisecond))
	s.started(4, t0.Add(1530*time.Millisecond)) // 30 ms
	if p, n := s.takeInterval(); n != 3 || p.Max != 30 || p.P50 < 9.8 || p.P50 > 10.2 {
		t.Errorf("first interval: %d samples, %+v; want 3, p50 10 ms, max 30 ms", n, p)
	}
	s.committed([]pgq.JobID{6}, t0.Add(10500*time.Millisecond)) // last tenth
	s.started(6, t0.Add(10520*time.Millisecond))                // 20 ms
	if _, n := s.takeInterval(); n != 1 {
		t.Errorf("second interval: %d samples, want 1", n)
	}
	all, n, first, last := s.totals()
	if n != 4 || all.Max != 30 || first.LatencySamples != 3 || last.LatencySamples != 1 ||
		last.EnqueueToStart.P99 < 19.6 || last.EnqueueToStart.P99 > 20.4 {
		t.Errorf("totals: %d samples, %+v; first %+v; last %+v", n, all, first, last)
	}
	if h := s.held(); h != 0 {
		t.Errorf("%d jobs held after all started, want 0", h)
	}
}

// TestStartTimesReported: with a reporter, the run's samples are those of
// the intervals it took: what was counted before it began (the warm-up's
// last moments) and a start noted after its last take (the workers stop a
// moment after the deadline's row) count in neither, so the rows add up
// to the total.
func TestStartTimesReported(t *testing.T) {
	t0 := time.Now()
	warmed, deadline := t0.Add(time.Second), t0.Add(11*time.Second)
	measured := func(t time.Time) bool { return !t.Before(warmed) && t.Before(deadline) }
	s := newStartTimes(measured, warmed, deadline)

	s.committed([]pgq.JobID{1}, warmed)
	s.started(1, warmed.Add(time.Millisecond)) // before the reporter began
	s.beginIntervals()
	s.committed([]pgq.JobID{2, 3}, warmed.Add(time.Second))
	s.started(2, warmed.Add(time.Second+5*time.Millisecond))
	_, n1 := s.takeInterval()
	s.started(3, warmed.Add(2*time.Second))
	s.committed([]pgq.JobID{4}, deadline.Add(-time.Millisecond))
	_, n2 := s.takeInterval() // the deadline's row
	s.started(4, deadline.Add(2*time.Millisecond))
	if _, n, _, _ := s.totals(); n1 != 1 || n2 != 1 || n != n1+n2 {
		t.Errorf("intervals %d and %d samples, total %d; want 1, 1 and 2", n1, n2, n)
	}
}

// TestIntervalLine: a row's line has as many columns as the header.
func TestIntervalLine(t *testing.T) {
	r := Interval{EndSeconds: 60, Seconds: 60, WorkedJobsPerSec: 1234.5, EnqueuedJobsPerSec: 1234,
		EnqueueToStart: Percentiles{P50: 2.5, P99: 20}, Tables: TableSizes{JobTotalBytes: 3 << 20,
			JobHeapBytes: 1 << 20, JobIndexBytes: 2 << 20, LogTotalBytes: 100 << 20, LogLiveRows: 5, LogDeadRows: 7},
		HeapInuseBytes: 4 << 20, LiveHeapBytes: 3 << 20, RunCheckBytes: 1 << 19, Goroutines: 29, RSSBytes: 30 << 20, LoadAvg: "3.50 2.00 1.00"}
	line := r.line()
	if got, want := len(strings.Fields(line)), len(strings.Fields(intervalHeader)); got != want {
		t.Errorf("line %q has %d columns, header %q %d", line, got, intervalHeader, want)
	}
	for _, want := range []string{"1234.5", "3.0(1.0+2.0)", "5/7", " 2.5 ", " 29 ", "3.50"} {
		if !strings.Contains(line, want) {
			t.Errorf("line %q lacks %q", line, want)
		}
	}
}
