package chaos

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
)

// Print writes the report for people.
func (r *Report) Print(w io.Writer) {
	mode := ""
	if r.CompleteTx {
		mode = ", handlers use CompleteTx"
	}
	fmt.Fprintf(w, "chaos run %s: seed %d, %d workers, %d producers, %.0f s, heartbeat timeout %.1f s%s\n",
		r.Run, r.Seed, r.Workers, r.Producers, r.Seconds, r.Heartbeat, mode)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "fault\tfaults\tacked\tfinished\tlost\tstuck\trepeats\tin crash window\t")
	for _, row := range r.Rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", row.Kind, row.Faults, row.Acked, row.Finished,
			row.Lost, row.Stuck, row.Repeats, row.Explained)
	}
	_ = tw.Flush()
	fmt.Fprintln(w, "(a job counts at each fault kind whose affected window its life met, and at none or all)")
	fmt.Fprintf(w, "outcomes: %d successful, %d canceled (%d cancel requests; %d canceled without one), %d exception, %d logged twice\n",
		r.Successful, r.Canceled, r.CanceledAsked, r.BadCancels, r.Exception, r.DoubleOutcomes)
	fmt.Fprintf(w, "throughput: %.0f runs/s overall; %.0f/s during faults, %.0f/s without (ratio %.2f)\n",
		r.Throughput, r.DuringFaults, r.WithoutFaults, r.Ratio)
	for _, k := range []Kind{Restart, Crash} {
		var flow []float64
		down := 0.0
		for _, rec := range r.Recoveries {
			if rec.Kind == k && rec.Flowing >= 0 {
				flow = append(flow, rec.Flowing)
				down = max(down, rec.Down)
			}
		}
		if len(flow) == 0 {
			continue
		}
		slices.Sort(flow)
		fmt.Fprintf(w, "after a %s: jobs flow again in %.2f s (median of %d; max %.2f s; server down up to %.2f s)\n",
			k, flow[len(flow)/2], len(flow), flow[len(flow)-1], down)
	}
	for i, rep := range r.Unexplained {
		if i == 20 {
			fmt.Fprintf(w, "... and %d more jobs with repeats outside any crash window (--json lists them all)\n", len(r.Unexplained)-i)
			break
		}
		fmt.Fprintf(w, "repeat outside any crash window: job %d, runs by pids %v at %v, first claimed %s\n",
			rep.Job, rep.Pids, rep.Runs, rep.FirstPick.UTC().Format("15:04:05.000000"))
	}
	if !r.Drained {
		fmt.Fprintln(w, "the queue did not drain after the faults")
	}
	if r.OK() {
		fmt.Fprintln(w, "OK: nothing lost, nothing stuck, every repeat in a crash window")
		return
	}
	for _, f := range r.Failures {
		fmt.Fprintln(w, "FAIL: "+f)
	}
}
