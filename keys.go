package pgq

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/pgq-dev/pgq/dbgen"
)

// MaxKeyLength is the longest fairness or serial key Enqueue accepts, in
// bytes. Keys name tenants, accounts and the like; every job of a key
// carries it, and the keyed claim compares keys in an index.
const MaxKeyLength = 200

// WithFairnessKey gives the job a fairness key, such as a tenant's id.
// While an entrypoint has queued jobs with fairness keys, each claim of a
// pgq worker shares its batch round-robin across the keys that have due
// jobs (jobs without a key count as one more key), so that a key with a
// million queued jobs delays another key's job by about one claim, not by
// its backlog. Within a key, jobs run in enqueue order, those of one
// EnqueueBatch by priority first (by priority across batches while the
// entrypoint also holds jobs with a serial key or none, or has
// WithKeyConcurrencyLimit); across keys, every key gets the same share
// whatever its priorities. See WithKeyConcurrencyLimit for a fleet-wide
// cap per key, and docs/fairness.md. A PGQueuer worker sharing the queue
// runs keyed jobs as ordinary ones. key must be 1 to MaxKeyLength bytes of UTF-8 without NUL;
// a job takes a fairness key or a serial key, not both.
func WithFairnessKey(key string) EnqueueOption {
	return enqueueOption(func(c *enqueueConfig) {
		c.job.FairnessKey = key
		if key == "" {
			c.err = fmt.Errorf("pgq: WithFairnessKey(%q): empty key (leave the option out for none)", key)
		}
	})
}

// WithSerialKey gives the job a serial key, such as an account's id: pgq
// workers start a job with a serial key only when no other job of the same
// entrypoint and key is running, and start the jobs of one key in enqueue
// order (by priority first with WithSerialPriority), across every worker
// and process of the fleet. A job of the key that waits for a retry, or
// was enqueued with a delay, holds back the jobs after it; a held (failed)
// job holds them back until it is requeued or deleted, unless the
// entrypoint has WithSerialSkipHeld. When a worker dies, the key's next
// job waits until the heartbeat timeout puts the running one back in the
// queue. Order is the order of the job ids, which is commit order for one
// producer; jobs of one key enqueued by concurrent transactions run in id
// order as they become visible. A PGQueuer worker sharing the queue
// ignores serial keys. key must be 1 to MaxKeyLength bytes of UTF-8
// without NUL; a job takes a fairness key or a serial key, not both.
func WithSerialKey(key string) EnqueueOption {
	return enqueueOption(func(c *enqueueConfig) {
		c.job.SerialKey = key
		if key == "" {
			c.err = fmt.Errorf("pgq: WithSerialKey(%q): empty key (leave the option out for none)", key)
		}
	})
}

// checkKeys checks a new job's fairness and serial keys ("" is none).
func checkKeys(j NewJob) error {
	if j.FairnessKey != "" && j.SerialKey != "" {
		return fmt.Errorf("fairness key %s and serial key %s: a job takes one or the other, not both",
			showKey(j.FairnessKey), showKey(j.SerialKey))
	}
	for _, k := range [...]struct{ what, key string }{{"fairness key", j.FairnessKey}, {"serial key", j.SerialKey}} {
		switch {
		case len(k.key) > MaxKeyLength:
			return fmt.Errorf("%s %s is %d bytes, longer than MaxKeyLength (%d)", k.what, showKey(k.key), len(k.key), MaxKeyLength)
		case !utf8.ValidString(k.key):
			return fmt.Errorf("%s %s is not valid UTF-8", k.what, showKey(k.key))
		case strings.IndexByte(k.key, 0) >= 0:
			return fmt.Errorf("%s %s contains a NUL byte", k.what, showKey(k.key))
		}
	}
	return nil
}

// showKey quotes a key for an error, its first 40 bytes when it is long.
func showKey(k string) string {
	if len(k) <= 40 {
		return fmt.Sprintf("%q", k)
	}
	return fmt.Sprintf("%q...", k[:40])
}

// WithKeyConcurrencyLimit lets at most n jobs of each fairness key of the
// entrypoint run at once across the whole fleet (pgq workers; PGQueuer's
// do not count keys). Claims of the entrypoint then take a fleet-wide
// lock, as WithConcurrencyLimit's do.
func WithKeyConcurrencyLimit(n int) EntrypointOption {
	return entrypointOption(func(e *entrypoint) error {
		if n < 1 {
			return fmt.Errorf("key concurrency limit must be at least 1, got %d", n)
		}
		e.keyLimit = n
		return nil
	})
}

// WithSerialPriority makes the entrypoint's serial keys start their jobs
// by priority (highest first), then in enqueue order, instead of in
// enqueue order alone. One job of a key still runs at a time.
func WithSerialPriority() EntrypointOption {
	return entrypointOption(func(e *entrypoint) error {
		e.serialByPriority = true
		return nil
	})
}

// WithSerialSkipHeld lets the next job of a serial key start while an
// earlier job of the key is held (failed, see OnFailure(Hold)). By
// default a held job holds its key back until it is requeued or deleted.
func WithSerialSkipHeld() EntrypointOption {
	return entrypointOption(func(e *entrypoint) error {
		e.serialSkipHeld = true
		return nil
	})
}

// jobKeys are a batch's fairness and serial keys, parallel to its jobs;
// nil while no job of the batch has one.
type jobKeys struct{ fairness, serial []string }

// add records job i of n's keys, making k when the job is the batch's
// first with a key.
func (k *jobKeys) add(n, i int, j NewJob) *jobKeys {
	if k == nil {
		if j.FairnessKey == "" && j.SerialKey == "" {
			return nil
		}
		k = &jobKeys{fairness: make([]string, n), serial: make([]string, n)}
	}
	k.fairness[i], k.serial[i] = j.FairnessKey, j.SerialKey
	return k
}

// insertKeyed enqueues a batch that has keys: JobsEnqueueKeyed or
// JobsEnqueueKeyedSkipDuplicates, or for one job (Enqueue) their copies of
// scalars, JobsEnqueueKeyedOne and JobsEnqueueKeyedOneSkipDuplicates,
// whose plans a connection keeps. Batches without keys keep JobsEnqueue,
// which schemas before migration 6 serve.
func (q *Queries) insertKeyed(ctx context.Context, p dbgen.JobsEnqueueParams, k *jobKeys, skipDuplicates bool) ([]*dbgen.JobsEnqueueRow, error) {
	if len(p.Entrypoints) == 1 {
		one := dbgen.JobsEnqueueKeyedOneParams{
			Priority: p.Priorities[0], Entrypoint: p.Entrypoints[0],
			PayloadNull: p.PayloadNulls[0], Payload: p.Payloads[0],
			ExecuteAfterUs: p.ExecuteAfterUs[0], DedupeKey: p.DedupeKeys[0], Headers: p.Headers[0],
			FairnessKey: k.fairness[0], SerialKey: k.serial[0]}
		if skipDuplicates {
			srows, err := q.q.JobsEnqueueKeyedOneSkipDuplicates(ctx, q.db, dbgen.JobsEnqueueKeyedOneSkipDuplicatesParams(one))
			rows := make([]*dbgen.JobsEnqueueRow, len(srows))
			for i, r := range srows {
				rows[i] = (*dbgen.JobsEnqueueRow)(r)
			}
			return rows, err
		}
		r, err := q.q.JobsEnqueueKeyedOne(ctx, q.db, one)
		if err != nil {
			return nil, err
		}
		return []*dbgen.JobsEnqueueRow{(*dbgen.JobsEnqueueRow)(r)}, nil
	}
	kp := dbgen.JobsEnqueueKeyedParams{Priorities: p.Priorities, Entrypoints: p.Entrypoints,
		Payloads: p.Payloads, PayloadNulls: p.PayloadNulls, ExecuteAfterUs: p.ExecuteAfterUs,
		DedupeKeys: p.DedupeKeys, Headers: p.Headers, FairnessKeys: k.fairness, SerialKeys: k.serial}
	var rows []*dbgen.JobsEnqueueRow
	if skipDuplicates {
		srows, err := q.q.JobsEnqueueKeyedSkipDuplicates(ctx, q.db, dbgen.JobsEnqueueKeyedSkipDuplicatesParams(kp))
		for _, r := range srows {
			rows = append(rows, (*dbgen.JobsEnqueueRow)(r))
		}
		return rows, err
	}
	krows, err := q.q.JobsEnqueueKeyed(ctx, q.db, kp)
	for _, r := range krows {
		rows = append(rows, (*dbgen.JobsEnqueueRow)(r))
	}
	return rows, err
}
