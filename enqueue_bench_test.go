package pgq_test

import (
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqtest"
)

// BenchmarkEnqueue measures Enqueue of one job, as a web handler calls it:
// 8 goroutines (on 2 cores; one a core on more than 8) on a *sql.DB at
// database/sql's default settings, each
// enqueuing in a loop, without a key, with one of 100 fairness keys,
// with one of 100 serial keys, with a fairness key and a dedupe key of
// its own WithSkipDuplicates (none skipped), and WithAfter one of 100
// queued jobs. Every enqueue commits and waits for its
// flush, which takes most of a call; ns/op is the wall time per job of the
// 8 together.
func BenchmarkEnqueue(b *testing.B) {
	for _, d := range pgqtest.Drivers() {
		for _, kind := range []string{"plain", "fairness-key", "serial-key", "fairness-key-skip-duplicates", "after"} {
			b.Run(d+"/"+kind, func(b *testing.B) {
				db, _ := pgqtest.NewDB(b, d)
				q := pgq.NewQueries(db)
				ctx := b.Context()
				var n atomic.Int64
				var parents []pgq.JobID
				if kind == "after" {
					jobs := make([]pgq.NewJob, 100)
					for i := range jobs {
						jobs[i].Entrypoint = "parent"
					}
					var err error
					if parents, err = q.EnqueueBatch(ctx, jobs); err != nil {
						b.Fatal(err)
					}
				}
				b.SetParallelism(max(1, 8/runtime.GOMAXPROCS(0)))
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						var opts []pgq.EnqueueOption
						i := n.Add(1)
						key := "tenant-" + strconv.FormatInt(i%100, 10)
						switch kind {
						case "fairness-key":
							opts = append(opts, pgq.WithFairnessKey(key))
						case "serial-key":
							opts = append(opts, pgq.WithSerialKey(key))
						case "fairness-key-skip-duplicates":
							opts = append(opts, pgq.WithFairnessKey(key),
								pgq.WithDedupeKey("job-"+strconv.FormatInt(i, 10)), pgq.WithSkipDuplicates())
						case "after":
							opts = append(opts, pgq.WithAfter(parents[i%100]))
						}
						if _, err := q.Enqueue(ctx, "bench", []byte("x"), opts...); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}
