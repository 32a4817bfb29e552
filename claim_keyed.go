package pgq

import (
	"context"
	"time"

	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

// keyedState is what a claimer keeps between claims about keyed jobs
// (fairness and serial keys, see JobsClaimFair and JobsClaimKeyed). Only
// the claim loop's goroutine touches it.
type keyedState struct {
	// fair holds the entrypoints with queued keyed jobs that JobsClaimFair
	// takes (fairness keys only); old says there are others, which
	// JobsClaimKeyed takes. Both empty: no keyed jobs were seen.
	fair       map[string]bool
	old        bool
	all        bool      // every entrypoint had keyed jobs: no ordinary claim first
	turn       bool      // while active, every other claim takes keyed jobs first
	claims     int       // claims made
	lookedN    int       // claims made at the last look
	looked     time.Time // the last look (JobsKeyedWaiting or JobsClaimKeyed)
	fairLooked time.Time // the last JobsKeyedWaiting
	turnAt     time.Time // the last JobsClaimFair that recorded the turn
	cursors    map[string][2]string
}

// active reports whether the last look found entrypoints with queued
// keyed jobs.
func (k *keyedState) active() bool { return k.old || len(k.fair) > 0 }

// A claimer whose ordinary claims fill their batches and that found no
// keyed jobs looks again (JobsKeyedWaiting) once both keyedLookEvery and
// keyedLookClaims have passed, so that a busy entrypoint without keys
// cannot starve one with keys for long.
const (
	keyedLookEvery  = time.Second
	keyedLookClaims = 16
	// fairTurnEvery is how often the fair claim records the turn for the
	// enqueue (see JobsClaimFair): often enough that an enqueue's probe
	// steps over few claimed entries, seldom enough that the write costs
	// nothing to see.
	fairTurnEvery = 100 * time.Millisecond
)

// keyedRounds bounds the keyed claims one claim makes: a key with fewer
// jobs than its share leaves room that the next round fills.
const keyedRounds = 4

// claimRows runs the ordinary claim (JobsClaim), which skips entrypoints
// with queued keyed jobs, and the keyed claims for those: JobsClaimFair
// for entrypoints whose keyed jobs all have fairness keys, JobsClaimKeyed
// for the rest. While keyed jobs are about, the keyed claims go first on
// every other claim (on every claim when every entrypoint has keyed jobs),
// and the other claim takes what room is left. Otherwise a claim is
// JobsClaim alone, followed, when it left room or at the look's interval,
// by the small JobsKeyedWaiting: a workload without keys never plans the
// keyed statements. While JobsClaimFair has entrypoints, the look runs
// every keyedLookEvery, which moves an entrypoint whose jobs no longer
// suit it (a serial key, jobs without a key) to JobsClaimKeyed.
func (c *claimer) claimRows(ctx context.Context, s session, db sqlname.DBTX, inTx bool, p dbgen.JobsClaimParams) ([]*dbgen.JobsClaimRow, error) {
	k := &c.keyed
	k.claims++
	if (!k.active() && k.claims-k.lookedN >= keyedLookClaims && time.Since(k.looked) >= keyedLookEvery) ||
		(len(k.fair) > 0 && time.Since(k.fairLooked) >= keyedLookEvery) {
		if err := c.lookForKeyed(ctx, db, p.Entrypoints); err != nil {
			return nil, err
		}
	}
	keyedFirst := k.active() && (k.turn || k.all)
	k.turn = !k.turn
	// A claim that is its own transaction counts its jobs into the
	// statistics itself. Inside a transaction that runs more statements
	// (limits, keys) the rows are left to the fold: a statistics row
	// locked there would be held across statements, in no fixed order.
	p.FoldStatistics = !inTx
	var rows []*dbgen.JobsClaimRow
	if !keyedFirst {
		var err error
		if rows, err = c.q.JobsClaim(ctx, db, p); err != nil || len(rows) >= int(p.BatchSize) {
			return rows, err
		}
		if !k.active() {
			if err := c.lookForKeyed(ctx, db, p.Entrypoints); err != nil || !k.active() {
				return rows, err
			}
		}
	}
	if len(k.fair) > 0 {
		more, err := c.claimFair(ctx, db, p, rows)
		if err != nil {
			return nil, err
		}
		rows = append(rows, more...)
	}
	if k.old && len(rows) < int(p.BatchSize) {
		more, err := c.claimKeyedTx(ctx, s, db, inTx, p, rows)
		if err != nil {
			return nil, err
		}
		rows = append(rows, more...)
	}
	// When every entrypoint has keyed jobs, JobsClaim would skip them all.
	if keyedFirst && !k.all && len(rows) < int(p.BatchSize) {
		rest, err := c.q.JobsClaim(ctx, db, leftOver(p, rows))
		if err != nil {
			return nil, err
		}
		rows = append(rows, rest...)
	}
	return rows, nil
}

// lookForKeyed asks which entrypoints have queued keyed jobs, and which
// of those JobsClaimFair takes.
func (c *claimer) lookForKeyed(ctx context.Context, db sqlname.DBTX, names []string) error {
	k := &c.keyed
	k.looked, k.lookedN, k.fairLooked = time.Now(), k.claims, time.Now()
	found, err := c.q.JobsKeyedWaiting(ctx, db, names)
	if err != nil {
		return err
	}
	clear(k.fair)
	k.old = false
	for _, f := range found {
		if f.Fair && !f.Serial && !f.Unkeyed && (c.eps[f.Entrypoint] == nil || c.eps[f.Entrypoint].keyLimit == 0) {
			if k.fair == nil {
				k.fair = map[string]bool{}
			}
			k.fair[f.Entrypoint] = true
		} else {
			k.old = true
		}
	}
	k.all = len(found) == len(names)
	return nil
}

// claimFair claims the jobs of the entrypoints in c.keyed.fair
// (JobsClaimFair) within what p leaves after rows. An entrypoint that
// gave nothing while it had room goes to JobsClaimKeyed until the next
// look: its keyed jobs may be gone, not due, or held by others.
func (c *claimer) claimFair(ctx context.Context, db sqlname.DBTX, p dbgen.JobsClaimParams, rows []*dbgen.JobsClaimRow) ([]*dbgen.JobsClaimRow, error) {
	k := &c.keyed
	left := leftOver(p, rows)
	if left.BatchSize == 0 {
		return nil, nil
	}
	fp := dbgen.JobsClaimFairParams{
		SynchronousClaim: p.SynchronousClaim,
		FoldStatistics:   p.FoldStatistics,
		Entrypoints:      left.Entrypoints,
		Caps:             make([]int32, len(left.Entrypoints)),
		BatchSize:        left.BatchSize,
		QueueManagerID:   p.QueueManagerID,
	}
	asked := false
	for i, name := range left.Entrypoints {
		if k.fair[name] {
			fp.Caps[i] = left.Caps[i]
			asked = asked || fp.Caps[i] > 0
		}
	}
	if !asked {
		return nil, nil
	}
	if now := time.Now(); now.Sub(k.turnAt) >= fairTurnEvery {
		fp.RecordTurn, k.turnAt = true, now
	}
	res, err := c.q.JobsClaimFair(ctx, db, fp)
	if err != nil {
		return nil, err
	}
	got := make([]*dbgen.JobsClaimRow, len(res))
	took := map[string]bool{}
	for i, r := range res {
		got[i] = (*dbgen.JobsClaimRow)(r)
		took[r.Entrypoint] = true
	}
	if len(res) < int(fp.BatchSize) {
		for i, name := range fp.Entrypoints {
			if fp.Caps[i] > 0 && !took[name] {
				delete(k.fair, name)
				k.old = true
			}
		}
	}
	return got, nil
}

// leftOver is p less what rows took: each entrypoint's cap and the batch.
func leftOver(p dbgen.JobsClaimParams, rows []*dbgen.JobsClaimRow) dbgen.JobsClaimParams {
	took := map[string]int32{}
	for _, r := range rows {
		took[r.Entrypoint]++
	}
	q := p
	q.Caps = make([]int32, len(p.Caps))
	for i, name := range p.Entrypoints {
		q.Caps[i] = max(p.Caps[i]-took[name], 0)
	}
	q.BatchSize = max(p.BatchSize-int32(len(rows)), 0)
	return q
}

// claimKeyedTx runs claimKeyed in a transaction with JIT off (see
// JobsKeyedTxSettings): db's when inTx, else one of its own on s.
func (c *claimer) claimKeyedTx(ctx context.Context, s session, db sqlname.DBTX, inTx bool, p dbgen.JobsClaimParams, rows []*dbgen.JobsClaimRow) ([]*dbgen.JobsClaimRow, error) {
	if inTx {
		if err := c.q.JobsKeyedTxSettings(ctx, db); err != nil {
			return nil, err
		}
		return c.claimKeyed(ctx, db, p, rows)
	}
	tx, err := s.begin(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	tdb := wrapDB(c.sqlNames, tx)
	if err := c.q.JobsKeyedTxSettings(ctx, tdb); err != nil {
		return nil, err
	}
	got, err := c.claimKeyed(ctx, tdb, p, rows)
	if err != nil {
		return nil, err
	}
	return got, tx.Commit()
}

// claimKeyed claims keyed entrypoints' jobs (JobsClaimKeyed) within what
// p leaves after rows, in up to keyedRounds rounds, and keeps each
// entrypoint's cursors for the next claim.
func (c *claimer) claimKeyed(ctx context.Context, db sqlname.DBTX, p dbgen.JobsClaimParams, rows []*dbgen.JobsClaimRow) ([]*dbgen.JobsClaimRow, error) {
	k := &c.keyed
	k.looked, k.lookedN = time.Now(), k.claims
	if k.cursors == nil {
		k.cursors = map[string][2]string{}
	}
	var got []*dbgen.JobsClaimRow
	for round := 0; round < keyedRounds; round++ {
		left := leftOver(p, append(rows[:len(rows):len(rows)], got...))
		if left.BatchSize == 0 {
			break
		}
		kp := dbgen.JobsClaimKeyedParams{
			SynchronousClaim: p.SynchronousClaim,
			Entrypoints:      left.Entrypoints,
			Caps:             left.Caps,
			FairCursors:      make([]string, len(left.Entrypoints)),
			SerialCursors:    make([]string, len(left.Entrypoints)),
			KeyLimits:        make([]int32, len(left.Entrypoints)),
			ByPriority:       make([]bool, len(left.Entrypoints)),
			HeldBlocks:       make([]bool, len(left.Entrypoints)),
			BatchSize:        left.BatchSize,
			QueueManagerID:   p.QueueManagerID,
		}
		fromCursor := false
		for i, name := range left.Entrypoints {
			if k.fair[name] {
				kp.Caps[i] = 0 // JobsClaimFair's
				continue
			}
			cur := k.cursors[name]
			fromCursor = fromCursor || cur != [2]string{}
			kp.FairCursors[i], kp.SerialCursors[i] = cur[0], cur[1]
			if ep := c.eps[name]; ep != nil {
				kp.KeyLimits[i] = int32(ep.keyLimit)
				kp.ByPriority[i] = ep.serialByPriority
				kp.HeldBlocks[i] = !ep.serialSkipHeld
			}
		}
		res, err := c.q.JobsClaimKeyed(ctx, db, kp)
		if err != nil {
			return nil, err
		}
		n := 0
		seen := map[string]bool{}
		for _, r := range res {
			if r.ID == 0 {
				k.cursors[r.Entrypoint] = [2]string{r.FairCursor, r.SerialCursor}
				seen[r.Entrypoint] = true
				continue
			}
			got = append(got, claimRowFromKeyed(r))
			n++
		}
		for _, name := range left.Entrypoints {
			if !seen[name] {
				delete(k.cursors, name)
			}
		}
		if round == 0 {
			k.old = len(seen) > 0
			k.all = len(seen)+len(k.fair) == len(left.Entrypoints)
		}
		if n == 0 && !fromCursor {
			break
		}
		// Nothing after the cursors: the walks reached the last key and
		// the next round (cursors now reset) starts at the first.

	}
	return got, nil
}
