package pgq

import (
	"context"
	"database/sql"
	"log/slog"
	"sync"
	"time"
)

// The pool check: how often Run reads its pool's statistics, and over how
// many readings in a row a sign must show before it counts.
const (
	poolCheckInterval = 250 * time.Millisecond
	poolCheckSpan     = 2
)

// Signs of a starving pool, per second, sustained over poolCheckSpan
// readings.
const (
	// poolChurnPerSec is connections closed per second because the pool
	// already held its MaxIdleConns idle ones: each stands for a new
	// connection (a new server process) opened soon after. A starving
	// pool's churn is bounded by how fast the server starts processes,
	// which is slow on a busy server, so the bar is low.
	poolChurnPerSec = 8
	// poolWaitPerSec is time per second that callers waited for a
	// connection because the pool was at its MaxOpenConns.
	poolWaitPerSec = 100 * time.Millisecond
)

// poolState is what the workers running on one *sql.DB share: how many
// connections their handlers may use at once, what the pool's idle limit
// was raised to, and which warnings were given.
type poolState struct {
	mu          sync.Mutex
	runs        int // Run calls under way
	want        int // connections they may use at once: handlers + own
	raisedTo    int // the idle limit pgq set, 0 if none
	warnedChurn bool
	warnedWait  bool
}

var pools sync.Map // *sql.DB -> *poolState

// enterPool registers a Run on db that may use n connections at once; the
// returned func undoes it.
func enterPool(db *sql.DB, n int) (*poolState, func()) {
	v, _ := pools.LoadOrStore(db, &poolState{})
	ps := v.(*poolState)
	ps.mu.Lock()
	ps.runs++
	ps.want += n
	ps.mu.Unlock()
	return ps, func() {
		ps.mu.Lock()
		defer ps.mu.Unlock()
		ps.runs--
		ps.want -= n
		if ps.runs == 0 {
			pools.CompareAndDelete(db, ps)
		}
	}
}

func (ps *poolState) wanted() int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.want
}

// poolSample is one reading of a pool's statistics.
type poolSample struct {
	idleClosed int64
	wait       time.Duration
}

// poolCheck watches a pool for the signs of starvation that handlers
// using the worker's pool cause: a pool whose idle limit is below the
// handlers' concurrency closes a connection after nearly every statement
// and opens a new one for the next (database/sql keeps 2 idle by default),
// so every statement pays for a new server process; a pool at its
// MaxOpenConns makes callers wait.
type poolCheck struct {
	db     *sql.DB
	state  *poolState
	raise  bool // raise the idle limit when it churns
	logger *slog.Logger

	last            poolSample
	churned, waited int // readings in a row showing the sign
	// maxIdle is the most idle connections seen: the pool's idle limit is
	// at least that, so raising it to no more would lower it.
	maxIdle int
}

func (c *poolCheck) read() poolSample {
	s := c.db.Stats()
	c.maxIdle = max(c.maxIdle, s.Idle)
	return poolSample{idleClosed: s.MaxIdleClosed, wait: s.WaitDuration}
}

// run reads the pool's statistics every poolCheckInterval until ctx ends.
func (c *poolCheck) run(ctx context.Context) {
	c.last = c.read()
	every(ctx, poolCheckInterval, c.step)
}

func (c *poolCheck) step() {
	now := c.read()
	secs := poolCheckInterval.Seconds()
	churn := float64(now.idleClosed-c.last.idleClosed) / secs
	wait := time.Duration(float64(now.wait-c.last.wait) / secs)
	c.last = now
	c.churned = streak(c.churned, churn >= poolChurnPerSec)
	if c.maxIdle >= c.state.wanted() {
		c.churned = 0 // the idle limit is not the handlers' problem
	}
	c.waited = streak(c.waited, wait >= poolWaitPerSec)
	if c.churned >= poolCheckSpan {
		c.churned = 0
		c.onChurn(churn)
	}
	if c.waited >= poolCheckSpan {
		c.waited = 0
		c.onWait(wait)
	}
}

func streak(n int, sign bool) int {
	if sign {
		return n + 1
	}
	return 0
}

// onChurn raises the pool's idle limit to what the workers on it may use
// at once, once for each higher figure, and says so; told not to raise it,
// it says once what to do. It never lowers the limit: when more
// connections than that have been seen idle, the churn is the rest of the
// program's, and it says nothing.
func (c *poolCheck) onChurn(perSec float64) {
	st := c.state
	st.mu.Lock()
	want, act := st.want, false
	if c.raise {
		if act = want > st.raisedTo && want > c.maxIdle; act {
			st.raisedTo = want
			c.db.SetMaxIdleConns(want)
		}
	} else {
		act, st.warnedChurn = !st.warnedChurn, true
	}
	st.mu.Unlock()
	if !act {
		return
	}
	attrs := []any{"idle_closed_per_sec", int(perSec), "connections_wanted", want}
	const why = "pgq: the pool closes connections as fast as it opens them: its idle limit (SetMaxIdleConns, " +
		"database/sql's default is 2) is below the handlers' concurrency, so their statements pay for new " +
		"server connections; "
	if c.raise {
		c.logger.Warn(why+"raised it to connections_wanted (the sum of WithMaxConcurrentTasks of the workers on the pool, plus 2 each). "+
			"Set it yourself next to WithMaxConcurrentTasks, or pass WithPoolTuning(false) to keep yours", attrs...)
		return
	}
	c.logger.Warn(why+"call db.SetMaxIdleConns with at least connections_wanted "+
		"(the sum of WithMaxConcurrentTasks of the workers on the pool, plus 2 each), next to WithMaxConcurrentTasks", attrs...)
}

// onWait says once that callers wait for the pool's connections.
func (c *poolCheck) onWait(perSec time.Duration) {
	st := c.state
	st.mu.Lock()
	warned := st.warnedWait
	st.warnedWait = true
	want := st.want
	st.mu.Unlock()
	if warned {
		return
	}
	c.logger.Warn("pgq: callers wait for the pool's connections: it is at its SetMaxOpenConns; handlers that use "+
		"the database wait for each other, and so do the worker's statements that are not on a connection of "+
		"its own; raise SetMaxOpenConns to at least connections_wanted plus the worker's own "+
		"connections (see QueueManager.Run) and what the rest of the program uses",
		"max_open_conns", c.db.Stats().MaxOpenConnections, "wait_per_sec", perSec.Round(time.Millisecond),
		"connections_wanted", want)
}
