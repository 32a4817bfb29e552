package pgq

import (
	"context"
	"time"

	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

// keyedState is what a claimer keeps between claims about keyed jobs
// (fairness and serial keys, see JobsClaimKeyed). Only the claim loop's
// goroutine touches it.
type keyedState struct {
	active  bool      // the last look found entrypoints with queued keyed jobs
	all     bool      // ... and every entrypoint had some: no ordinary claim first
	turn    bool      // while active, every other claim takes keyed jobs first
	claims  int       // claims made
	lookedN int       // claims made at the last look
	looked  time.Time // the last look (JobsKeyedWaiting or JobsClaimKeyed)
	cursors map[string][2]string
}

// A claimer whose ordinary claims fill their batches and that found no
// keyed jobs looks again (JobsKeyedWaiting) once both keyedLookEvery and
// keyedLookClaims have passed, so that a busy entrypoint without keys
// cannot starve one with keys for long.
const (
	keyedLookEvery  = time.Second
	keyedLookClaims = 16
)

// keyedRounds bounds the keyed claims one claim makes: a key with fewer
// jobs than its share leaves room that the next round fills.
const keyedRounds = 4

// claimRows runs the ordinary claim (JobsClaim), which skips entrypoints
// with queued keyed jobs, and the keyed claim (JobsClaimKeyed) for those.
// While keyed jobs are about, the keyed claim goes first on every other
// claim (on every claim when every entrypoint has keyed jobs), and the
// other claim takes what room is left. Otherwise a claim is JobsClaim
// alone, followed, when it left room or at the look's interval, by the
// small JobsKeyedWaiting: a workload without keys never plans the keyed
// statement.
func (c *claimer) claimRows(ctx context.Context, s session, db sqlname.DBTX, inTx bool, p dbgen.JobsClaimParams) ([]*dbgen.JobsClaimRow, error) {
	k := &c.keyed
	k.claims++
	if !k.active && k.claims-k.lookedN >= keyedLookClaims && time.Since(k.looked) >= keyedLookEvery {
		if err := c.lookForKeyed(ctx, db, p.Entrypoints); err != nil {
			return nil, err
		}
	}
	keyedFirst := k.active && (k.turn || k.all)
	k.turn = !k.turn
	var rows []*dbgen.JobsClaimRow
	if !keyedFirst {
		var err error
		if rows, err = c.q.JobsClaim(ctx, db, p); err != nil || len(rows) >= int(p.BatchSize) {
			return rows, err
		}
		if !k.active {
			if err := c.lookForKeyed(ctx, db, p.Entrypoints); err != nil || !k.active {
				return rows, err
			}
		}
	}
	more, err := c.claimKeyedTx(ctx, s, db, inTx, p, rows)
	if err != nil {
		return nil, err
	}
	rows = append(rows, more...)
	if keyedFirst && len(rows) < int(p.BatchSize) {
		rest, err := c.q.JobsClaim(ctx, db, leftOver(p, rows))
		if err != nil {
			return nil, err
		}
		rows = append(rows, rest...)
	}
	return rows, nil
}

// lookForKeyed asks which entrypoints have queued keyed jobs.
func (c *claimer) lookForKeyed(ctx context.Context, db sqlname.DBTX, names []string) error {
	k := &c.keyed
	k.looked, k.lookedN = time.Now(), k.claims
	found, err := c.q.JobsKeyedWaiting(ctx, db, names)
	if err != nil {
		return err
	}
	k.active, k.all = len(found) > 0, len(found) == len(names)
	return nil
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
			k.active, k.all = len(seen) > 0, len(seen) == len(left.Entrypoints)
		}
		if n == 0 && !fromCursor {
			break
		}
		// Nothing after the cursors: the walks reached the last key and
		// the next round (cursors now reset) starts at the first.

	}
	return got, nil
}
