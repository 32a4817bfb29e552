package pgq

import (
	"errors"
	"testing"
	"time"
)

// TestRefreshPlan: when the watcher's loop queries, step by step, without
// a database.
func TestRefreshPlan(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1_700_000_000, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	type step struct {
		do   string // "refresh", "lookup", "quiet", "ran-ok", "ran-err", "ran-empty", or "" to only check
		at   int    // ms after t0
		want queryKind
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"nothing wanted", []step{{"", 0, queryNone}}},
		{"first refresh at once, the next after the window", []step{
			{"refresh", 0, queryRefresh}, {"ran-ok", 0, queryNone},
			{"refresh", 10, queryNone}, {"", 49, queryNone}, {"", 50, queryRefresh}}},
		{"a look-up runs at once", []step{{"lookup", 0, queryLookup}}},
		{"a look-up waits for a due refresh", []step{{"lookup", 0, queryLookup}, {"refresh", 0, queryRefresh}}},
		{"a refresh covers the look-up", []step{
			{"lookup", 0, queryLookup}, {"refresh", 0, queryRefresh}, {"ran-ok", 0, queryNone}, {"", 100, queryNone}}},
		{"look-ups are throttled too", []step{
			{"lookup", 0, queryLookup}, {"ran-lookup", 0, queryNone}, {"lookup", 20, queryNone}, {"", 50, queryLookup}}},
		{"quiet opens the window", []step{
			{"refresh", 0, queryRefresh}, {"ran-ok", 0, queryNone}, {"quiet", 1, queryNone}, {"refresh", 1, queryRefresh}}},
		{"an empty refresh does not close the window", []step{
			{"refresh", 0, queryRefresh}, {"ran-empty", 0, queryNone}, {"refresh", 1, queryRefresh}}},
		{"a failure backs off, then retries", []step{
			{"refresh", 0, queryRefresh}, {"ran-err", 0, queryNone}, {"", 99, queryNone}, {"", 100, queryRefresh},
			{"ran-err", 100, queryNone}, {"", 299, queryNone}, {"", 300, queryRefresh}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := refreshPlan{debounce: 50 * time.Millisecond, maxBackoff: 5 * time.Second}
			for i, s := range c.steps {
				now := ms(s.at)
				switch s.do {
				case "refresh":
					p.refresh = true
				case "lookup":
					p.lookup = true
				case "quiet":
					p.quiet()
				case "ran-ok":
					p.ran(queryRefresh, now, true, nil)
				case "ran-lookup":
					p.ran(queryLookup, now, true, nil)
				case "ran-empty":
					p.ran(queryRefresh, now, false, nil)
				case "ran-err":
					p.ran(queryRefresh, now, true, errors.New("down"))
				}
				if got := p.due(now); got != s.want {
					t.Fatalf("step %d (%q at %d ms): due %d, want %d", i, s.do, s.at, got, s.want)
				}
				if at, ok := p.next(); ok && s.want != queryNone && at.After(now) {
					t.Fatalf("step %d: due now but next says %v", i, at.Sub(t0))
				}
			}
		})
	}
}
