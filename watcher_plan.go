package pgq

import "time"

// queryKind is what the watcher's loop runs next.
type queryKind int

const (
	queryNone    queryKind = iota
	queryRefresh           // every waited id
	queryLookup            // the ids of the waits that just began
)

// refreshPlan decides when the loop queries. Refreshes and look-ups are each
// throttled to one per debounce window, leading edge first; a look-up
// waits for a refresh that is due anyway, since that covers its ids. After
// a failed query the same query is retried with a growing pause.
type refreshPlan struct {
	debounce, maxBackoff    time.Duration
	refresh, lookup         bool // wanted
	lastRefresh, lastLookup time.Time
	retryAt                 time.Time
	backoff                 time.Duration
}

// quiet records that a query ended the last pending wait: the next wait
// starts afresh, its look-up and its first refresh run at once.
func (s *refreshPlan) quiet() {
	s.lastRefresh, s.lastLookup = time.Time{}, time.Time{}
}

// due returns the query to run at now.
func (s *refreshPlan) due(now time.Time) queryKind {
	switch {
	case now.Before(s.retryAt):
		return queryNone
	case s.refresh && now.Sub(s.lastRefresh) >= s.debounce:
		return queryRefresh
	case s.lookup && !s.refresh && now.Sub(s.lastLookup) >= s.debounce:
		return queryLookup
	}
	return queryNone
}

// next returns when due may return a query, or false when nothing is wanted.
func (s *refreshPlan) next() (time.Time, bool) {
	var at time.Time
	switch {
	case s.refresh:
		at = s.lastRefresh.Add(s.debounce)
	case s.lookup:
		at = s.lastLookup.Add(s.debounce)
	default:
		return time.Time{}, false
	}
	if at.Before(s.retryAt) {
		at = s.retryAt
	}
	return at, true
}

// ran records the outcome of a query of kind k that started at start.
// queried is false when there was nothing to look up.
func (s *refreshPlan) ran(k queryKind, start time.Time, queried bool, err error) {
	if err != nil {
		s.backoff = min(max(2*s.backoff, s.debounce, 100*time.Millisecond), s.maxBackoff)
		s.retryAt = start.Add(s.backoff)
		return
	}
	s.backoff = 0
	switch k {
	case queryRefresh:
		s.refresh, s.lookup = false, false // a refresh covers the new waits too
		if queried {
			s.lastRefresh = start
		}
	case queryLookup:
		s.lookup = false
		if queried {
			s.lastLookup = start
		}
	}
}
