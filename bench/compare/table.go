package main

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
)

// table holds every run's figures: by system, by round.
type table struct {
	drains, tputs []string
	runs          map[string][]figures
	done          map[string][]bool
}

func newTable(drains, tputs []system, rounds int) *table {
	t := &table{runs: map[string][]figures{}, done: map[string][]bool{}}
	for _, s := range drains {
		t.drains = append(t.drains, s.name)
	}
	for _, s := range tputs {
		t.tputs = append(t.tputs, s.name)
	}
	for _, n := range append(slices.Clone(t.drains), t.tputs...) {
		t.runs[n] = make([]figures, rounds)
		t.done[n] = make([]bool, rounds)
	}
	return t
}

func (t *table) set(name string, round int, f figures) {
	t.runs[name][round] = f
	t.done[name][round] = true
}

// column returns one figure of name's runs, round by round (only the
// rounds it ran).
func (t *table) column(name string, get func(figures) float64) []float64 {
	var out []float64
	for r, f := range t.runs[name] {
		if t.done[name][r] {
			out = append(out, get(f))
		}
	}
	return out
}

// ratios returns name's rate ÷ ref's, round by round.
func (t *table) ratios(name, ref string) []float64 {
	var out []float64
	for r := range t.runs[name] {
		if t.done[name][r] && t.done[ref][r] && t.runs[ref][r].rate > 0 {
			out = append(out, t.runs[name][r].rate/t.runs[ref][r].rate)
		}
	}
	return out
}

func median(v []float64) float64 {
	var ok []float64
	for _, x := range v {
		if x >= 0 {
			ok = append(ok, x)
		}
	}
	if len(ok) == 0 {
		return -1
	}
	slices.Sort(ok)
	n := len(ok)
	if n%2 == 1 {
		return ok[n/2]
	}
	return (ok[n/2-1] + ok[n/2]) / 2
}

func kilo(v float64) string {
	if v < 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fk", v/1000)
}

func times(v float64) string {
	if v < 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f×", v)
}

func num(v float64, digits int) string {
	if v < 0 {
		return "-"
	}
	return fmt.Sprintf("%.*f", digits, v)
}

func joined(v []float64, f func(float64) string) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = f(x)
	}
	return strings.Join(s, ", ")
}

// print writes the table in Markdown: rates per round and their medians,
// ratios to River per round and their medians, CPU per job, RSS; then the
// paced run's latency.
func (t *table) print(w io.Writer, cfg *config) error {
	rate := func(f figures) float64 { return f.rate }
	fmt.Fprintf(w, "\n| system | jobs/s, round by round | median | ÷ River, round by round | median ÷ River | CPU µs/job server + client (medians) | peak RSS MB (median) |\n")
	fmt.Fprintf(w, "| --- | --- | --- | --- | --- | --- | --- |\n")
	row := func(name, ref string) {
		rates := t.column(name, rate)
		server := median(t.column(name, func(f figures) float64 { return f.serverUs }))
		client := median(t.column(name, func(f figures) float64 { return f.clientUs }))
		cpu := "-"
		if server >= 0 && client >= 0 {
			cpu = fmt.Sprintf("%.1f + %.1f = %.1f", server, client, server+client)
		}
		rss := median(t.column(name, func(f figures) float64 { return float64(f.rss) / (1 << 20) }))
		ratio, medRatio := "", ""
		if ref != "" && name != ref {
			rs := t.ratios(name, ref)
			ratio, medRatio = joined(rs, times), times(median(rs))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", name, joined(rates, kilo), kilo(median(rates)),
			ratio, medRatio, cpu, num(rss, 0))
	}
	for _, n := range t.drains {
		row(n, riverDrainName)
	}
	paced := pgqPacedName(cfg.load)
	for _, n := range t.tputs {
		if n == paced {
			row(n, "") // half the load by design: no ratio
		} else {
			row(n, riverDurationName)
		}
	}
	if pq := t.pgqueuer(); pq != "" {
		fmt.Fprintf(w, "\n| pgq drain | ÷ PGQueuer, round by round | median |\n| --- | --- | --- |\n")
		for _, n := range t.drains {
			if strings.HasPrefix(n, "pgq ") {
				rs := t.ratios(n, pq)
				fmt.Fprintf(w, "| %s | %s | %s |\n", n, joined(rs, times), times(median(rs)))
			}
		}
	}
	p50 := t.column(paced, func(f figures) float64 { return f.p50 })
	p99 := t.column(paced, func(f figures) float64 { return f.p99 })
	offered := t.column(paced, func(f figures) float64 { return f.offered })
	fmt.Fprintf(w, "\n%s (%s): enqueue → start p50 %s ms (median %s), p99 %s ms (median %s); enqueued %s jobs/s\n",
		paced, cfg.latencyArgs, joined(p50, func(v float64) string { return num(v, 1) }), num(median(p50), 1),
		joined(p99, func(v float64) string { return num(v, 1) }), num(median(p99), 1), joined(offered, kilo))
	return nil
}

// pgqueuer returns the name of PGQueuer's row, "" when it did not run.
func (t *table) pgqueuer() string {
	for _, n := range t.drains {
		if strings.HasPrefix(n, "PGQueuer") {
			return n
		}
	}
	return ""
}

func numCPU() int { return runtime.NumCPU() }
