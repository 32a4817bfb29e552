// Package idruns finds, in a batch of job ids, the run of ids lying close
// together that holds most of them: the finish of a batch
// (JobsFinishSucceeded) reads those as one range of the job table's
// primary key and finds the others one by one.
package idruns

import (
	"slices"

	"github.com/pgq-dev/pgq/dbgen"
)

// Gap is the widest gap between two ids of a batch that a run bridges:
// the finish then reads the rows between them too (fewer than Gap: rows
// of jobs not in the batch, or dead ones) rather than descending the
// primary key once more. A descent costs about as much as reading a few
// rows (docs/benchmarks.md, "Instructions a job, counted").
const Gap = 4

// Largest returns the lowest and highest id of the run that holds the
// most of ids, where a run is ids each at most Gap above the one before,
// in ascending order (the first such run when several hold as many). ids
// is not changed; repeated ids are allowed. For no ids it returns an
// empty range, low > high.
func Largest(ids []int64) (low, high int64) {
	if len(ids) == 0 {
		return 0, -1
	}
	sorted := ids
	if !slices.IsSorted(ids) {
		sorted = slices.Clone(ids)
		slices.Sort(sorted)
	}
	best, bestLen, start := 0, 0, 0 // the largest run's first index and length; this run's first
	for i := 1; i <= len(sorted); i++ {
		// Compared as unsigned: the difference of two sorted int64s
		// can exceed the int64 range, never the uint64 one.
		if i == len(sorted) || uint64(sorted[i])-uint64(sorted[i-1]) > Gap {
			if i-start > bestLen {
				best, bestLen = start, i-start
			}
			start = i
		}
	}
	return sorted[best], sorted[best+bestLen-1]
}

// Finish returns p with RunLow and RunHigh set to the largest run of
// p.Ids: how every caller of JobsFinishSucceeded fills them.
func Finish(p dbgen.JobsFinishSucceededParams) dbgen.JobsFinishSucceededParams {
	p.RunLow, p.RunHigh = Largest(p.Ids)
	return p
}
