package pgq

import (
	"context"
	"database/sql"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// The governor's settings (see governor).
const (
	// governEvery is how often the governor decides; it reads the pool's
	// connections in use governReads times in between.
	governEvery = 250 * time.Millisecond
	governReads = 10
	// governSamples is how many of the worker's latest statement times
	// the governor looks at; it decides only when governMinSamples of
	// them came since its last decision.
	governSamples    = 32
	governMinSamples = 4
	// governRows is the most rows (jobs claimed, outcomes written) a
	// statement may have to count: a larger one takes longer whatever
	// the load.
	governRows = 100
	// The 90th percentile of the statement times over governSlow lowers
	// the limit, under governFast raises it back.
	governSlow = 6 * time.Millisecond
	governFast = 3 * time.Millisecond
	// governFloor is the lowest limit, as a fraction of the most handlers
	// (WithMaxConcurrentTasks): 1/governFloor of it, at least 1.
	governFloor = 8
)

// A governor lowers how many handlers a worker runs at once while the
// database answers the worker's own statements slowly and the handlers are
// what keeps it busy: they hold the pool's connections. A hundred handlers
// that each run a statement on 2 server cores make every statement wait in
// the server's CPU queue, pgq's claims and outcome writes too, and they
// complete no more jobs a second than a quarter of them would (see
// docs/pool.md). Handlers that do not use the pool (they call other
// services, or sleep) are never held back: the database is then not theirs
// to slow down.
//
// Every governEvery it takes the 90th percentile of the worker's latest
// claims' and outcome writes' round trips (of up to governRows rows each):
// over governSlow, while the pool's connections in use beyond the
// worker's own are, on average over governReads readings, at least half
// the limit, it lowers the limit by a quarter, or by up to half when they
// are slower still (not below max/governFloor);
// under governFast, or when the handlers hold fewer connections, it raises
// it by a twentieth of the most, up to max. The claim loop and the
// executor read the limit (current).
//
// The figures: handlers doing one INSERT each through the worker's pool,
// on 2 cores, completed the most jobs a second at about 25 at once, with
// the worker's statements' p99 near 7 ms; at 100 at once, fewer jobs a
// second and a p99 of 30-40 ms (docs/pool.md).
type governor struct {
	db     *sql.DB // nil: never lowers the limit (WithConcurrencyTuning(false))
	own    int     // connections the worker holds of db for itself
	max    int
	floor  int
	logger *slog.Logger
	limit  atomic.Int64

	mu      sync.Mutex
	times   []time.Duration // the latest statement times, a ring of governSamples
	next    int             // where the next one goes
	fresh   int             // added since the last decision
	inUse   int             // the sum of the pool's connections in use, read since the last decision
	reads   int             // how many readings
	lowered bool            // said so once
}

func newGovernor(db *sql.DB, own, most int, logger *slog.Logger) *governor {
	g := &governor{db: db, own: own, max: most, floor: max(1, most/governFloor), logger: logger}
	g.limit.Store(int64(most))
	return g
}

// current is how many handlers may run at once now.
func (g *governor) current() int { return int(g.limit.Load()) }

// observe records the round trip of one of the worker's statements that
// handled rows jobs.
func (g *governor) observe(d time.Duration, rows int) {
	if g.db == nil || rows > governRows {
		return
	}
	g.mu.Lock()
	if len(g.times) < governSamples {
		g.times = append(g.times, d)
	} else {
		g.times[g.next] = d
	}
	g.next = (g.next + 1) % governSamples
	g.fresh++
	g.mu.Unlock()
}

// run reads the pool and decides (see governor) until ctx ends.
func (g *governor) run(ctx context.Context) {
	if g.db == nil {
		return
	}
	every(ctx, governEvery/governReads, g.read)
}

// read takes one reading of the pool's connections in use, and decides
// after governReads of them.
func (g *governor) read() {
	inUse := g.db.Stats().InUse - g.own
	g.mu.Lock()
	g.inUse += inUse
	g.reads++
	if g.reads < governReads {
		g.mu.Unlock()
		return
	}
	fresh, avg := g.fresh, g.inUse/g.reads
	g.fresh, g.inUse, g.reads = 0, 0, 0
	times := slices.Clone(g.times)
	g.mu.Unlock()
	g.decide(fresh, times, avg)
}

// decide moves the limit by the statement times (fresh of them new) and
// the pool's connections in use beyond the worker's own (on average).
// The handlers keep the database busy when at least half of those allowed
// to run hold a connection.
func (g *governor) decide(fresh int, times []time.Duration, inUse int) {
	cur := g.current()
	busy := inUse >= max(2, cur/2)
	p90 := percentile90(times)
	switch {
	case fresh < governMinSamples && busy:
		return // too few statements to tell
	case busy && p90 > governSlow:
		// Down by a quarter, by half when the statements take over twice
		// governSlow (so that a start with every handler at once is over
		// sooner), in between as they are slow.
		keep := min(0.75, max(0.5, float64(governSlow)/float64(p90)))
		next := max(g.floor, min(cur-1, int(float64(cur)*keep)))
		if next == cur {
			return
		}
		g.limit.Store(int64(next))
		if !g.lowered {
			g.lowered = true
			g.logger.Info("pgq: the database answers slowly while the handlers hold the pool's connections: "+
				"running fewer handlers at once (see WithConcurrencyTuning)",
				"limit", next, "max_concurrent_tasks", g.max, "connections_in_use", inUse)
		}
	case !busy || p90 < governFast:
		if cur < g.max {
			g.limit.Store(int64(min(g.max, cur+max(1, g.max/20))))
		}
	}
}

// percentile90 is the 90th percentile of ds (sorted in place).
func percentile90(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[(len(ds)-1)*9/10]
}
