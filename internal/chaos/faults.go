package chaos

import (
	"context"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

// inject injects a fault every FaultEvery on average (uniform in 0.5-1.5×)
// until ctx ends; with Calm set, only in the storms, which alternate with
// calms of that length. Faults that last (a stop, a restart) run in goroutines
// of wg, so that faults overlap as they would in production; at most one
// server restart runs at a time.
func (s *server) inject(ctx context.Context, wg *sync.WaitGroup) {
	rng := rand.New(rand.NewPCG(s.cfg.Seed, 0x636861))
	var restarting sync.Mutex
	began := time.Now()
	for {
		d := time.Duration(float64(s.cfg.FaultEvery) * (0.5 + rng.Float64()))
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		if c := s.cfg.Calm; c > 0 && (time.Since(began)/c)%2 == 1 {
			continue // a calm: no faults
		}
		kind := s.cfg.Kinds[rng.IntN(len(s.cfg.Kinds))]
		switch kind {
		case Kill:
			w := s.pickWorker(rng, false)
			if w == nil {
				continue
			}
			at := s.now()
			_ = w.cmd.Process.Signal(syscall.SIGKILL)
			s.record(Fault{Kind: Kill, Start: at, End: at, Pids: []int{w.pid}})
		case Stop:
			w := s.pickWorker(rng, true)
			if w == nil {
				continue
			}
			s.mu.Lock()
			w.stopped = true
			s.mu.Unlock()
			// Longer than the heartbeat timeout: its jobs are released
			// and run elsewhere while it sleeps.
			length := s.cfg.HeartbeatTimeout + time.Duration(float64(s.cfg.HeartbeatTimeout)*rng.Float64())
			at := s.now()
			_ = w.cmd.Process.Signal(syscall.SIGSTOP)
			wg.Go(func() {
				sleep(context.WithoutCancel(ctx), length)
				_ = w.cmd.Process.Signal(syscall.SIGCONT)
				s.mu.Lock()
				w.stopped = false
				s.mu.Unlock()
				s.record(Fault{Kind: Stop, Start: at, End: s.now(), Pids: []int{w.pid}})
			})
		case Terminate:
			s.terminate(ctx, rng)
		case Restart, Crash:
			if !restarting.TryLock() {
				continue
			}
			wg.Go(func() {
				defer restarting.Unlock()
				at := s.now()
				var err error
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
				if kind == Restart {
					err = s.cfg.Server.Restart(rctx)
				} else {
					err = s.cfg.Server.Crash(rctx)
				}
				cancel()
				f := Fault{Kind: kind, Start: at, End: s.now()}
				if err != nil {
					f.Err = err.Error()
				}
				s.record(f)
			})
		case Cancel:
			s.cancel(ctx, rng)
		}
	}
}

// pickWorker returns a random live worker (not stopped, when forStop), or
// nil.
func (s *server) pickWorker(rng *rand.Rand, forStop bool) *worker {
	s.mu.Lock()
	defer s.mu.Unlock()
	var live []*worker
	for _, w := range s.workers {
		if w == nil || (forStop && w.stopped) {
			continue
		}
		select {
		case <-w.exited:
		default:
			live = append(live, w)
		}
	}
	if len(live) == 0 {
		return nil
	}
	return live[rng.IntN(len(live))]
}

// Targets of terminate faults, told apart by application_name and by the
// last statement each connection ran (pg_stat_activity.query: the
// library's statements start with their sqlc name).
var targets = []string{"claim", "outcome", "heartbeat", "listener", "handler", "producer"}

func classify(app, query string) string {
	switch {
	case strings.HasPrefix(app, "pgq worker "):
		return "listener"
	case strings.HasPrefix(app, "pgq claims "): // the worker's claim connection
		return "claim"
	case app == producerApp:
		return "producer"
	}
	name, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(query), "-- name: "), " ")
	switch name {
	case "JobsClaim", "JobsNextDue", "JobsLockEntrypoints", "JobsRunningByEntrypoint", "LogStartedByEntrypoint":
		return "claim"
	case "JobsFinish":
		return "outcome"
	case "JobsHeartbeat", "JobsReleaseStale", "Notify":
		return "heartbeat"
	}
	if strings.Contains(query, "pgq_chaos_ledger") || query == "BEGIN" || query == "COMMIT" || query == "ROLLBACK" ||
		strings.HasPrefix(query, "begin") || strings.HasPrefix(query, "commit") || strings.HasPrefix(query, "rollback") {
		return "handler"
	}
	return "other"
}

// cutPgqPrefix cuts the prefix of the application_name pgq gives a
// worker's listener ("pgq worker ") or claim connection ("pgq claims "),
// both followed by the worker's id.
func cutPgqPrefix(app string) (string, bool) {
	if rest, ok := strings.CutPrefix(app, "pgq worker "); ok {
		return rest, true
	}
	return strings.CutPrefix(app, "pgq claims ")
}

// terminate ends one or two backends of a random target class.
func (s *server) terminate(ctx context.Context, rng *rand.Rand) {
	rows, err := s.db.QueryContext(ctx, `SELECT pid, application_name, query FROM pg_stat_activity
		WHERE (application_name LIKE 'pgq chaos %' OR application_name LIKE 'pgq worker %'
		       OR application_name LIKE 'pgq claims %')
		  AND pid <> pg_backend_pid() AND datname = current_database()
		ORDER BY pid`)
	if err != nil {
		s.logf("no terminate: cannot list the connections (the server is down?): %v", err)
		return
	}
	type backend struct {
		pid   int
		owner int // worker pid; 0 for a producer
	}
	by := map[string][]backend{}
	s.mu.Lock()
	for rows.Next() {
		var pid int
		var app, query string
		if rows.Scan(&pid, &app, &query) != nil {
			continue
		}
		owner := 0
		if rest, ok := strings.CutPrefix(app, workerApp); ok {
			owner, _ = strconv.Atoi(rest)
		} else if rest, ok := cutPgqPrefix(app); ok {
			qm, _, _ := strings.Cut(rest, " ")
			if owner = s.qmPid[qm]; owner == 0 {
				continue // another program's worker
			}
		}
		c := classify(app, query)
		by[c] = append(by[c], backend{pid, owner})
	}
	s.mu.Unlock()
	_ = rows.Close()
	var have []string
	for _, t := range targets {
		if len(by[t]) > 0 {
			have = append(have, t)
		}
	}
	if len(have) == 0 {
		return
	}
	target := have[rng.IntN(len(have))]
	cands := by[target]
	rng.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	cands = cands[:min(len(cands), 1+rng.IntN(2))]
	at := s.now()
	f := Fault{Kind: Terminate, Start: at, End: at, Target: target}
	for _, b := range cands {
		if _, err := s.db.ExecContext(ctx, "SELECT pg_terminate_backend($1)", b.pid); err != nil {
			f.Err = err.Error()
		}
		if !slices.Contains(f.Pids, b.owner) {
			f.Pids = append(f.Pids, b.owner)
		}
	}
	s.record(f)
}

// cancel cancels up to three random running chaos jobs and one queued one.
func (s *server) cancel(ctx context.Context, rng *rand.Rand) {
	jobs := s.names.Qualified(sqlname.JobTable)
	var ids []int64
	for _, q := range []struct {
		status string
		n      int
	}{{"picked", 1 + rng.IntN(3)}, {"queued", rng.IntN(2)}} {
		if q.n == 0 {
			continue
		}
		rows, err := s.db.QueryContext(ctx, "SELECT id FROM "+jobs+
			" WHERE entrypoint = $1 AND status = $2 ORDER BY random() LIMIT $3", Entrypoint, q.status, q.n)
		if err != nil {
			continue
		}
		for rows.Next() {
			var id int64
			if rows.Scan(&id) == nil {
				ids = append(ids, id)
			}
		}
		_ = rows.Close()
	}
	if len(ids) == 0 {
		return
	}
	// Counted as canceled before the call: a call that fails may still
	// have canceled them.
	s.mu.Lock()
	for _, id := range ids {
		s.canceled[id] = true
	}
	s.mu.Unlock()
	at := s.now()
	jids := make([]pgq.JobID, len(ids))
	for i, id := range ids {
		jids[i] = pgq.JobID(id)
	}
	f := Fault{Kind: Cancel, Start: at, End: at, Jobs: ids}
	if err := s.q.MarkJobAsCancelled(ctx, jids); err != nil {
		f.Err = err.Error()
	}
	s.record(f)
}
