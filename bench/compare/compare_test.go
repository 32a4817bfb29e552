package main

import (
	"strings"
	"testing"
	"time"
)

// The harness itself needs a server, River, PGQueuer and minutes; these
// check its arithmetic and that `make verify`'s vet has a test to build.

func TestIsoSeconds(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"PT23.5S":   23500 * time.Millisecond,
		"PT1M2.5S":  62500 * time.Millisecond,
		"PT1H0M0S":  time.Hour,
		"PT0.0001S": 100 * time.Microsecond,
	} {
		got, err := isoSeconds(in)
		if err != nil || got != want {
			t.Errorf("isoSeconds(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "23.5", "PTS", "PT1X", "PTxS"} {
		if _, err := isoSeconds(bad); err == nil {
			t.Errorf("isoSeconds(%q): no error", bad)
		}
	}
}

func TestMedianSkipsUnknown(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{-1, 5, -1}, 5},
		{[]float64{-1}, -1},
		{nil, -1},
	} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestRotate(t *testing.T) {
	s := []system{{name: "a"}, {name: "b"}, {name: "c"}}
	var got []string
	for r := range 4 {
		var names []string
		for _, x := range rotate(s, r) {
			names = append(names, x.name)
		}
		got = append(got, strings.Join(names, ""))
	}
	if want := "abc bca cab abc"; strings.Join(got, " ") != want {
		t.Errorf("rotations %v, want %s", got, want)
	}
}

func TestTableRatiosPerRound(t *testing.T) {
	cfg := &config{load: 0.5, latencyArgs: "--producers 4"}
	const pq = "PGQueuer drain"
	drains := []system{{name: riverDrainName}, {name: pgqDefaultsName}, {name: pq}}
	tputs := []system{{name: riverDurationName}, {name: pgqMaxName}, {name: pgqPacedName(cfg.load)}}
	tb := newTable(drains, tputs, 2)
	tb.set(riverDrainName, 0, figures{rate: 20000, serverUs: 40, clientUs: 20, rss: 50 << 20})
	tb.set(riverDrainName, 1, figures{rate: 10000, serverUs: 44, clientUs: 22, rss: 60 << 20})
	tb.set(pgqDefaultsName, 0, figures{rate: 30000, serverUs: 20, clientUs: 5, rss: 20 << 20})
	tb.set(pgqDefaultsName, 1, figures{rate: 25000, serverUs: 22, clientUs: 7, rss: 22 << 20})
	tb.set(pq, 0, figures{rate: 3000})
	tb.set(pq, 1, figures{rate: 2500})
	tb.set(pgqPacedName(cfg.load), 0, figures{rate: 9000, p50: 1.5, p99: 9, offered: 9000, clientUs: -1, serverUs: -1})
	var b strings.Builder
	if err := tb.print(&b, cfg); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"| " + pgqDefaultsName + " | 30.0k, 25.0k | 27.5k | 1.50×, 2.50× | 2.00× | 21.0 + 6.0 = 27.0 | 21 |",
		"| " + riverDrainName + " | 20.0k, 10.0k | 15.0k |  |  | 42.0 + 21.0 = 63.0 | 55 |",
		"p50 1.5 ms (median 1.5), p99 9.0 ms (median 9.0)",
		"| " + pgqDefaultsName + " | 10.00×, 10.00× | 10.00× |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}
