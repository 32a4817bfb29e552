package bench

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgq-dev/pgq"
)

// Handler kinds of the drain and throughput benchmarks.
const (
	// HandlerNoop returns at once (after HandlerTime): the cost measured
	// is the queue's own.
	HandlerNoop = "noop"
	// HandlerSQL runs one INSERT through the same *sql.DB the workers use,
	// as most real handlers do something in the database.
	HandlerSQL = "sql"
)

// How a handler waits its HandlerConfig.Time.
const (
	// WaitSleep waits on a Go timer, as time.Sleep does. The runtime wakes
	// it late by up to about a millisecond when the process is idle.
	WaitSleep = "sleep"
	// WaitIO waits as a goroutine blocked on a socket does, on a kernel
	// timer's file descriptor (Linux; elsewhere as WaitSleep).
	WaitIO = "io"
)

// HandlerConfig says what each job's handler does.
type HandlerConfig struct {
	Kind string        // HandlerNoop (default) or HandlerSQL
	Time time.Duration // how long the handler waits (after its INSERT)
	Wait string        // how it waits: WaitSleep (default) or WaitIO
}

// waitTally adds up the handlers' waits: how many, and how long in all.
type waitTally struct{ n, ns atomic.Int64 }

// meanMs is the mean wait in milliseconds, 0 when there was none.
func (w *waitTally) meanMs() float64 {
	if w == nil || w.n.Load() == 0 {
		return 0
	}
	return round3(float64(w.ns.Load()) / float64(w.n.Load()) / 1e6)
}

func (h *HandlerConfig) check() error {
	if err := oneOf(&h.Kind, "handler", HandlerNoop, HandlerSQL); err != nil {
		return err
	}
	if h.Time < 0 {
		return fmt.Errorf("handler time must not be negative, got %v", h.Time)
	}
	return oneOf(&h.Wait, "handler wait", WaitSleep, WaitIO)
}

// oneOf sets *v to the first of choices when empty, and refuses a value
// that is none of them, naming it as what.
func oneOf(v *string, what string, choices ...string) error {
	if *v == "" {
		*v = choices[0]
	}
	if !slices.Contains(choices, *v) {
		return fmt.Errorf("unknown %s %q: want %s", what, *v, strings.Join(choices, " or "))
	}
	return nil
}

// sleepWait waits d on a Go timer, or until ctx ends.
func sleepWait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	select {
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// prepare creates the table the sql handler writes to, empty.
func (h *HandlerConfig) prepare(ctx context.Context, db *sql.DB) error {
	if h.Kind != HandlerSQL {
		return nil
	}
	for _, q := range []string{sqlCreateSink, sqlTruncateSink} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("preparing the sql handler's table: %w", err)
		}
	}
	return nil
}

// runs counts the jobs that ran more than once, so that a job run twice is
// seen whatever the log says. It keeps one bit per job id seen, in pages
// of runsPage ids made as ids arrive: a run of hours costs an eighth of a
// byte per job, not a map entry.
type runs struct {
	mu    sync.Mutex
	pages map[int64]*[runsPage / 64]uint64
	twice atomic.Int64
	// onStart, when not nil, is called with each job's id as its handler
	// starts (Throughput times enqueue → start with it).
	onStart func(id pgq.JobID, at time.Time)
}

// runsPage is how many job ids one page of runs covers (8 KiB of bits).
const runsPage = 1 << 16

func newRuns() *runs { return &runs{pages: map[int64]*[runsPage / 64]uint64{}} }

// bytes is the memory the pages of r hold: it grows by an eighth of a
// byte a job, by design.
func (r *runs) bytes() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return int64(len(r.pages)) * runsPage / 8
}

// add notes that job id ran; a nil *runs notes nothing.
func (r *runs) add(id pgq.JobID) {
	if r == nil {
		return
	}
	if r.onStart != nil {
		r.onStart(id, time.Now())
	}
	n := int64(id)
	page, bit := n/runsPage, n%runsPage
	if bit < 0 { // ids are positive; keep negative ones apart all the same
		page, bit = page-1, bit+runsPage
	}
	r.mu.Lock()
	p := r.pages[page]
	if p == nil {
		p = new([runsPage / 64]uint64)
		r.pages[page] = p
	}
	again := p[bit/64]&(1<<(bit%64)) != 0
	p[bit/64] |= 1 << (bit % 64)
	r.mu.Unlock()
	if again {
		r.twice.Add(1)
	}
}

// handler returns the job handler h describes, on db; r, when not nil,
// is told of each job's start, waited, when not nil, adds up the waits,
// and done is called after the job's work, before the handler returns.
func (h *HandlerConfig) handler(db *sql.DB, r *runs, waited *waitTally, done func()) pgq.Handler {
	return func(ctx context.Context, job *pgq.Job) error {
		r.add(job.ID)
		if h.Kind == HandlerSQL {
			if _, err := db.ExecContext(ctx, sqlInsertSink, int64(job.ID)); err != nil {
				return err
			}
		}
		if h.Time > 0 {
			wait := sleepWait
			if h.Wait == WaitIO {
				wait = ioWait
			}
			start := time.Now()
			if err := wait(ctx, h.Time); err != nil {
				return err
			}
			if waited != nil {
				waited.n.Add(1)
				waited.ns.Add(int64(time.Since(start)))
			}
		}
		done()
		return nil
	}
}

// staleMessage starts the log message of a worker that put jobs whose
// heartbeat was too old back in the queue.
const staleMessage = "pgq: released jobs whose worker stopped heartbeating"

// logCounter is a slog.Handler that counts the jobs released as stale
// (from the workers' log) and passes every record on to next, if any.
type logCounter struct {
	next  slog.Handler
	stale *atomic.Int64
}

func newLogCounter(next *slog.Logger) (*slog.Logger, *atomic.Int64) {
	c := &logCounter{stale: new(atomic.Int64)}
	if next != nil {
		c.next = next.Handler()
	}
	return slog.New(c), c.stale
}

func (c *logCounter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || (c.next != nil && c.next.Enabled(ctx, l))
}

func (c *logCounter) Handle(ctx context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, staleMessage) {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "jobs" {
				c.stale.Add(a.Value.Int64())
			}
			return true
		})
	}
	if c.next != nil && c.next.Enabled(ctx, r.Level) {
		return c.next.Handle(ctx, r)
	}
	return nil
}

func (c *logCounter) WithAttrs(as []slog.Attr) slog.Handler {
	d := *c
	if c.next != nil {
		d.next = c.next.WithAttrs(as)
	}
	return &d
}

func (c *logCounter) WithGroup(name string) slog.Handler {
	d := *c
	if c.next != nil {
		d.next = c.next.WithGroup(name)
	}
	return &d
}
