package pgq

import (
	"context"
	"database/sql"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

// Maintenance of a running worker.
const (
	// releaseBatch is the most stale jobs one statement puts back in the
	// queue.
	releaseBatch = 1000
	// defaultUpkeepInterval is how often a worker checks the job table's
	// planner statistics and dead rows (a read of two counters). Every
	// claim walks the queue's index from its head, past the entries of
	// the rows claimed since the last vacuum: at 9,000 jobs/s, 10 s
	// between checks let 180,000 dead rows pile up and claims take 3-6
	// times as long (see docs/benchmarks.md).
	defaultUpkeepInterval = time.Second
	// vacuumMinDead is the fewest dead rows for which a worker vacuums the
	// job table itself (and then only when they are over a tenth of the
	// table).
	vacuumMinDead = 10_000
	// vacuumGap is the least time from the end of the job table's last
	// manual vacuum (by any worker) to the next one a worker runs; an
	// autovacuum's end does not count (see JobsTableUpkeep): with four
	// worker processes draining 36,000 jobs/s, each
	// vacuuming whenever the dead rows passed the threshold, vacuums
	// took as much CPU as a fifth of the jobs.
	vacuumGap = 2 * time.Second
	// analyzeGap is the same for ANALYZE, when the statistics are only
	// behind (not missing): a drain changes a fifth of the table in well
	// under a second, and an ANALYZE every second of each worker cost
	// more than the plans it kept fresh.
	analyzeGap = 10 * time.Second
	// keyedGrowthPages is how many pages pgqueuer_pgq_keyed_idx may grow
	// past its size at the last ANALYZE or VACUUM, which found it empty,
	// before a worker analyzes the job table at once (see
	// JobsTableUpkeep): a page holds up to about a thousand keyed jobs.
	keyedGrowthPages = 1
	// startAnalyzeWait bounds how long a worker that starts on missing or
	// stale statistics waits for an ANALYZE or VACUUM of the job table
	// that another session holds (a worker process started at the same
	// time, autovacuum) before it claims on the statistics there are.
	startAnalyzeWait = 3 * time.Second
	// Log folding and pruning batch sizes: small, so that no statement
	// holds locks long or takes more than a few milliseconds (every log
	// row folded is an update that writes an entry into each of the log's
	// five indexes).
	foldBatch  = 500
	pruneBatch = 1000
	// logUpkeepRest is how long a pass of log upkeep rests after each of
	// its turns, as a multiple of the turn's own time, while the passes
	// keep up (see foldAndPrune).
	logUpkeepRest = 1
)

// maintainer keeps one run's jobs held and the tables fit: it heartbeats
// the jobs the run holds and cuts off the attempts whose claim was lost,
// puts the jobs of dead workers back in the queue, analyses and vacuums
// the job table, and folds and prunes the log. Heartbeats and releases go
// on the run's own heartbeat connection; the rest borrows from the pool.
type maintainer struct {
	q      *dbgen.Queries
	db     *sql.DB
	rdb    sqlname.DBTX // db with names rewritten
	names  sqlname.Names
	lane   *lane // the heartbeat connection
	qmID   uuid.UUID
	held   *holdings
	logger *slog.Logger
	wake   func() // jobs were released: look for them

	entrypoints      []string // the run's, sorted
	heartbeatTimeout time.Duration
	upkeepInterval   time.Duration
	sweepInterval    time.Duration // of the dependency sweep (sweepAfter)
	statsInterval    time.Duration
	logRetention     time.Duration
	vacuum           bool
	// beforeAnalyze, when set (by a test), runs in analyzeFirst between
	// the read that found the statistics stale and analyzeSample.
	beforeAnalyze func()

	noRights sync.Once // logs that the role may not vacuum the job table
	// beatWarned is when a failed heartbeat was last logged: retried
	// soon after each failure, they are logged once per interval.
	// Only the heartbeat's goroutine uses it.
	beatWarned time.Time
	// logBehind is set when the last pass of log upkeep ran out of its
	// time before it caught up: the next one does not rest. Only the
	// log upkeep's goroutine uses it.
	logBehind bool
}

// heartbeat refreshes the heartbeat of the held jobs, all in one
// statement, three times per heartbeat timeout, and each time then puts
// jobs abandoned by dead workers back in the queue. A heartbeat that
// failed is tried again after a tenth of that interval, on a new
// connection, and the stale release waits for one that succeeds: it needs
// the same connection, and after a server restart, waiting for it held
// the next heartbeat up until the worker's jobs were about to go stale.
func (m *maintainer) heartbeat(ctx context.Context) {
	interval := max(m.heartbeatTimeout/3, 10*time.Millisecond)
	repeat(ctx, interval, func() time.Duration {
		if !m.beat(ctx) {
			return max(interval/10, 10*time.Millisecond)
		}
		began := time.Now()
		m.releaseStale(ctx)
		if took := time.Since(began); took > interval && ctx.Err() == nil {
			// The next heartbeat waited for this.
			m.logger.Warn("pgq: releasing stale jobs slow", "took", took, "heartbeat_timeout", m.heartbeatTimeout)
		}
		return interval
	})
}

// holdExpiry is the part of the heartbeat timeout after which the handler
// of a job whose hold this worker could not confirm is stopped
// (holdings.expire). The job's heartbeat in the database is at most a
// heartbeatFreshParts-th of the timeout older than the confirmation (the
// heartbeat confirms without rewriting rows that fresh), so another worker
// can release it 0.21 of the timeout later at the earliest: the handler
// has that long to see its context end.
const holdExpiry = 0.75

// heartbeatFreshParts: a heartbeat leaves alone (confirms, without writing)
// the rows whose heartbeat is younger than the heartbeat timeout divided by
// this, most often set by their claim a moment before (see JobsHeartbeat).
const heartbeatFreshParts = 24

// expireHolds stops, looking ten times per heartbeat timeout, the handlers
// of the jobs whose hold could not be confirmed for holdExpiry of it (see
// holdings.expire). It runs apart from the heartbeat, so that a heartbeat
// stuck on a slow statement or connection does not hold it up.
func (m *maintainer) expireHolds(ctx context.Context) {
	limit := time.Duration(float64(m.heartbeatTimeout) * holdExpiry)
	every(ctx, max(m.heartbeatTimeout/10, 10*time.Millisecond), func() {
		m.held.expire(time.Now(), limit)
	})
}

// every calls f every d until ctx ends.
func every(ctx context.Context, d time.Duration, f func()) {
	repeat(ctx, d, func() time.Duration { f(); return d })
}

// repeat calls f after first, and then each time the delay f returned
// after f's start (at once when f took longer), until ctx ends.
func repeat(ctx context.Context, first time.Duration, f func() (next time.Duration)) {
	t := time.NewTimer(first)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		began := time.Now()
		next := f()
		t.Reset(max(next-time.Since(began), 0))
	}
}

// warn logs a failed maintenance step, unless it failed because ctx ended
// (the worker is stopping).
func (m *maintainer) warn(ctx context.Context, msg string, err error, args ...any) {
	if err != nil && ctx.Err() == nil {
		m.logger.Warn(msg, append(args, "err", err)...)
	}
}

// beat refreshes the heartbeat of the jobs this run holds (running, or
// with their outcome on its way) and gives up the attempts whose claim was
// lost (see holdings.verify). It reports whether it could.
func (m *maintainer) beat(ctx context.Context) bool {
	atts, ids := m.held.snapshot()
	if len(ids) == 0 {
		return true
	}
	var held []*dbgen.JobsHeartbeatRow
	began := time.Now()
	var sent time.Time // when the last attempt's statement was sent
	attempts := 0
	err := m.lane.do(ctx, func(s session) (err error) {
		sent = time.Now()
		attempts++
		held, err = m.q.JobsHeartbeat(ctx, s.db, dbgen.JobsHeartbeatParams{
			Ids: ids, QueueManagerID: uuid.NullUUID{UUID: m.qmID, Valid: true},
			RefreshAfterS: (m.heartbeatTimeout / heartbeatFreshParts).Seconds(),
		})
		return err
	})
	if took := time.Since(began); took > m.heartbeatTimeout/3 && ctx.Err() == nil {
		// A heartbeat this late lets the worker's jobs go stale: say
		// where the time went (a connection to get, or the statement).
		var statement time.Duration
		if !sent.IsZero() {
			statement = time.Since(sent)
		}
		m.logger.Warn("pgq: heartbeat slow", "took", took, "statement", statement,
			"attempts", attempts, "jobs", len(ids), "heartbeat_timeout", m.heartbeatTimeout, "err", err)
	}
	if err != nil {
		if time.Since(m.beatWarned) >= m.heartbeatTimeout/3 {
			m.beatWarned = time.Now()
			m.warn(ctx, "pgq: heartbeat failed", err, "jobs", len(ids))
		}
		return false
	}
	token := make(map[int64]int64, len(held))
	for _, h := range held {
		token[h.ID] = h.ClaimToken
	}
	m.held.verify(atts, token, sent)
	return true
}

// releaseStale puts the jobs of this worker's entrypoints whose heartbeat
// is older than the heartbeat timeout back in the queue (their worker
// died), and wakes the claim loop when there were any.
func (m *maintainer) releaseStale(ctx context.Context) {
	for ctx.Err() == nil {
		// This worker's own jobs are never stale to it, even when its
		// heartbeats failed: it is alive and still runs them.
		_, mine := m.held.snapshot()
		var ids []int64
		err := m.lane.do(ctx, func(s session) (err error) {
			ids, err = m.q.JobsReleaseStale(ctx, s.db, dbgen.JobsReleaseStaleParams{
				Entrypoints:    m.entrypoints,
				StaleAfterUs:   m.heartbeatTimeout.Microseconds(),
				QueueManagerID: uuid.NullUUID{UUID: m.qmID, Valid: true},
				HeldIds:        mine,
				MaxJobs:        releaseBatch,
			})
			return err
		})
		if err != nil {
			m.warn(ctx, "pgq: releasing stale jobs failed", err)
			return
		}
		if len(ids) == 0 {
			return
		}
		m.logger.Info("pgq: released jobs whose worker stopped heartbeating", "jobs", len(ids),
			"heartbeat_timeout", m.heartbeatTimeout)
		m.wake()
		if len(ids) < releaseBatch {
			return
		}
	}
}

// tendJobTable keeps the job table fit for fast claims: it re-analyses the
// table when its statistics fall far behind (after a burst of enqueues into
// an empty table, without them the claim may be planned as a sort of every
// queued job), and, unless WithVacuum(false), vacuums it when dead rows
// pile up faster than autovacuum (which wakes once a minute) removes them:
// every claimed and finished job leaves two, and a claim steps over the
// dead entries at the head of the queue index.
func (m *maintainer) tendJobTable(ctx context.Context) {
	every(ctx, m.upkeepInterval, func() { m.upkeep(ctx, m.vacuum) })
}

// analyzeFirst brings the job table's planner statistics up to date
// before the run's first claim. When another session holds the table (the
// ANALYZE skips it) or another worker is analysing it, it waits for that
// work to end, checking again, for startAnalyzeWait at most: worker
// processes started together then run one ANALYZE between them, not one
// each in turn.
func (m *maintainer) analyzeFirst(ctx context.Context) {
	deadline := time.Now().Add(startAnalyzeWait)
	wait := 10 * time.Millisecond
	for ctx.Err() == nil {
		need, ok := m.needs(ctx, false)
		if !ok || !need.NeedsAnalyze {
			return
		}
		if m.beforeAnalyze != nil {
			m.beforeAnalyze()
		}
		if err := m.analyzeSample(ctx); err != nil {
			m.warn(ctx, "pgq: analysing the job table failed", err)
			return
		}
		if need, ok = m.needs(ctx, false); !ok || !need.NeedsAnalyze || time.Now().After(deadline) {
			return
		}
		sleepCtx(ctx, min(wait, time.Until(deadline)))
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// analyzeSample runs the ANALYZE before the first claim on a sample of a
// tenth of the usual size (see JobsAnalyzeSampleSettings): the claim waits
// for it, and needs only the table's and its indexes' sizes and the share
// of queued rows. The upkeep's later ANALYZEs take the full sample.
//
// It runs under an advisory lock that only these ANALYZEs take
// (JobsTryAnalyzeLock), and first reads again under it whether the table
// still needs one: the read that sent it here may have come just before
// another worker's or session's ANALYZE ended. While another worker holds
// the lock it does nothing, as when the ANALYZE skips a table another
// session holds.
func (m *maintainer) analyzeSample(ctx context.Context) error {
	tx, err := m.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	tdb := wrapDB(m.names, tx)
	if locked, err := m.q.JobsTryAnalyzeLock(ctx, tdb); err != nil || !locked {
		return err
	}
	if need, err := tableNeeds(ctx, m.q, tdb, m.names); err != nil || !need.NeedsAnalyze {
		return err
	}
	if err := m.q.JobsAnalyzeSampleSettings(ctx, tdb); err != nil {
		return err
	}
	if err := m.q.JobsAnalyze(ctx, tdb); err != nil {
		return err
	}
	return tx.Commit()
}

// upkeep analyses the job table if its statistics are stale and, when
// vacuum is set, vacuums it if its dead rows pile up.
func (m *maintainer) upkeep(ctx context.Context, vacuum bool) {
	need, ok := m.needs(ctx, vacuum)
	if !ok {
		return
	}
	if vacuum && need.NeedsVacuum {
		begin := time.Now()
		err := m.q.JobsVacuum(ctx, m.rdb)
		m.warn(ctx, "pgq: vacuuming the job table failed", err)
		if err == nil {
			m.logger.Debug("pgq: vacuumed the job table", "took", time.Since(begin))
		}
	}
	if need.NeedsAnalyze {
		m.warn(ctx, "pgq: analysing the job table failed", m.q.JobsAnalyze(ctx, m.rdb))
	}
}

// needs reads what the job table needs; ok is false when the read failed
// (logged) or this worker's role may not maintain the table (logged once,
// when the table wants it).
func (m *maintainer) needs(ctx context.Context, vacuum bool) (need *dbgen.JobsTableUpkeepRow, ok bool) {
	// On the heartbeat's connection, which it holds up by a read of the
	// catalog (and, when the statistics look empty, of the queue's first
	// thousand rows): from the pool it landed, once a second, on
	// connections that had never run it (each a new prepare, and under a
	// drain of handlers using the pool a p99 of 50 ms).
	err := m.lane.do(ctx, func(s session) (err error) {
		need, err = tableNeeds(ctx, m.q, s.db, m.names)
		return err
	})
	if err != nil {
		m.warn(ctx, "pgq: reading the job table's statistics failed", err)
		return need, false
	}
	if !need.MayMaintain {
		if need.NeedsAnalyze || vacuum && need.NeedsVacuum {
			m.noRights.Do(func() {
				m.logger.Info("pgq: the job table wants VACUUM or ANALYZE, which this worker's role may not run "+
					"(it needs the table's owner, or MAINTAIN on PostgreSQL 17+); leaving it to autovacuum",
					"table", m.names.Qualified(sqlname.JobTable))
			})
		}
		return need, false
	}
	return need, true
}

// upkeepParams are JobsTableUpkeep's parameters for the job table named by
// names, with gap the least time since the last manual vacuum.
func upkeepParams(names sqlname.Names, gap time.Duration) dbgen.JobsTableUpkeepParams {
	return dbgen.JobsTableUpkeepParams{MinDead: vacuumMinDead, VacuumGapS: gap.Seconds(),
		AnalyzeGapS: analyzeGap.Seconds(), TableName: names.Qualified(sqlname.JobTable),
		KeyedPages: keyedGrowthPages, KeyedIndexName: names.Qualified(sqlname.KeyedIndex)}
}

// tableNeeds reads what the job table named by names needs (see
// JobsTableUpkeep); NeedsAnalyze is also set when the statistics put the
// table under 1000 rows while 1000 or more jobs are queued.
func tableNeeds(ctx context.Context, q *dbgen.Queries, db dbgen.DBTX, names sqlname.Names) (*dbgen.JobsTableUpkeepRow, error) {
	need, err := q.JobsTableUpkeep(ctx, db, upkeepParams(names, vacuumGap))
	if err != nil || need.NeedsAnalyze || !need.FewRows {
		return need, err
	}
	need.NeedsAnalyze, err = q.JobsQueuedAtLeast(ctx, db)
	return need, err
}

// foldLog folds the log into the statistics and prunes old log rows,
// every statistics interval.
func (m *maintainer) foldLog(ctx context.Context) {
	every(ctx, m.statsInterval, func() {
		m.warn(ctx, "pgq: log maintenance failed", m.foldAndPrune(ctx))
	})
}

// foldAndPrune folds the log and prunes it, a batch of each in turn, until
// each has caught up (a batch short of full), or for one statistics
// interval at most: the next pass then starts at once. In turns, because
// under a steady stream of new log rows a fold run to the end first never
// ends (there is always a new row to fold), and the prune after it never
// ran. The cursors start afresh each pass, so that a row committed after
// a pass went past its id is done by the next one.
//
// While the passes keep up, a pass rests after each turn as long as the
// turn took (logUpkeepRest), so that a minute's log is pruned at half a
// connection's pace over part of the interval, not at a whole one's in a
// burst that takes the headroom of the claims and outcomes running
// meanwhile. A pass that runs out of time before it caught up does not
// rest, and neither does the next.
func (m *maintainer) foldAndPrune(ctx context.Context) error {
	began := time.Now()
	folding, pruning := true, m.logRetention > 0
	var folded, pruned int64 // the cursors: the last ids done
	rest := !m.logBehind
	for (folding || pruning) && ctx.Err() == nil && time.Since(began) < m.statsInterval {
		turn := time.Now()
		if folding {
			r, err := m.q.LogFoldStatistics(ctx, m.rdb, dbgen.LogFoldStatisticsParams{AfterID: folded, BatchSize: foldBatch})
			if err != nil {
				return err
			}
			folding, folded = r.Folded == foldBatch, r.LastID
		}
		if pruning {
			r, err := m.q.LogPrune(ctx, m.rdb, dbgen.LogPruneParams{
				OlderThanS: m.logRetention.Seconds(), AfterID: pruned, BatchSize: pruneBatch,
			})
			if err != nil {
				return err
			}
			pruning, pruned = r.Pruned == pruneBatch, r.LastID
		}
		if rest && (folding || pruning) {
			sleepCtx(ctx, time.Since(turn)*logUpkeepRest)
		}
	}
	if ctx.Err() == nil {
		m.logBehind = folding || pruning
	}
	return nil
}

// sleepCtx waits for d or until ctx ends, whichever comes first.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
