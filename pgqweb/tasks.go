package pgqweb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgq-dev/pgq"
)

// keptTasks is how many actions a process remembers for their pages.
const keptTasks = 50

// task is one action run by the dashboard (a bulk action on a filter or
// on ticked jobs), in its own goroutine.
type task struct {
	ID      string
	Verb    string // cancel, delete, requeue
	What    string // what it acts on, for people
	Started time.Time
	Back    string // the page it came from
	touched atomic.Int64
	mu      sync.Mutex
	ended   time.Time
	err     error
	done    chan struct{}
}

// taskView is a task as its page shows it.
type taskView struct {
	ID, Verb, What, Back string
	Started, Ended       time.Time
	Touched              int64
	Running              bool
	Err                  string
	Elapsed              time.Duration
	PerSecond            float64
}

func (t *task) view() *taskView {
	t.mu.Lock()
	defer t.mu.Unlock()
	v := &taskView{ID: t.ID, Verb: t.Verb, What: t.What, Back: t.Back, Started: t.Started, Ended: t.ended,
		Touched: t.touched.Load(), Running: t.ended.IsZero()}
	end := t.ended
	if v.Running {
		end = time.Now()
	}
	v.Elapsed = end.Sub(t.Started)
	if s := v.Elapsed.Seconds(); s > 0 {
		v.PerSecond = float64(v.Touched) / s
	}
	if t.err != nil {
		v.Err = t.err.Error()
	}
	return v
}

type tasks struct {
	mu    sync.Mutex
	list  []*task // oldest first
	byID  map[string]*task
	group sync.WaitGroup
}

func newTasks() *tasks { return &tasks{byID: map[string]*task{}} }

func (ts *tasks) get(id string) *task {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.byID[id]
}

func (ts *tasks) add(t *task) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.list = append(ts.list, t)
	ts.byID[t.ID] = t
	for len(ts.list) > keptTasks {
		old := ts.list[0]
		select {
		case <-old.done:
		default:
			return // keep running ones
		}
		delete(ts.byID, old.ID)
		ts.list = ts.list[1:]
	}
}

// action runs POST /actions/{action}: cancel, delete or requeue the jobs
// the form names (id values) or, with all=1, every job its filter
// (entrypoint, status, dedupe) matches.
func (s *server) action(w http.ResponseWriter, r *http.Request) {
	if err := crossOrigin.Check(r); err != nil {
		s.renderError(w, r, http.StatusForbidden, "Refused: the action did not come from this dashboard's own page.")
		return
	}
	if !s.cfg.actions {
		s.renderError(w, r, http.StatusForbidden, "This dashboard is read-only: start it with --allow-actions (pgqweb.WithActions) to act on jobs.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if err := r.ParseForm(); err != nil {
		s.renderError(w, r, http.StatusBadRequest, "Bad form: "+err.Error())
		return
	}
	if !s.validCSRF(r) {
		s.renderError(w, r, http.StatusForbidden, "Refused: the form's CSRF token is missing or stale. Reload the page and try again.")
		return
	}
	verb := r.PathValue("action")
	var f pgq.JobFilter
	var what string
	if r.PostFormValue("all") == "1" {
		jd := jobsData{Entrypoint: strings.TrimSpace(r.PostFormValue("entrypoint")), Status: r.PostFormValue("status"),
			Dedupe: r.PostFormValue("dedupe")}
		var err error
		if f, err = jd.filter(); err != nil {
			s.renderError(w, r, http.StatusBadRequest, err.Error())
			return
		}
		what = describe(jd)
	} else {
		for _, v := range r.PostForm["id"] {
			id, err := strconv.ParseInt(v, 10, 64)
			if err != nil || id <= 0 {
				s.renderError(w, r, http.StatusBadRequest, fmt.Sprintf("%q is not a job id.", v))
				return
			}
			f.IDs = append(f.IDs, pgq.JobID(id))
		}
		if len(f.IDs) == 0 {
			s.renderError(w, r, http.StatusBadRequest, "No job selected: tick some, or \"all matching\".")
			return
		}
		if st := r.PostFormValue("status"); st != "" {
			var err error
			if f.Statuses, err = statusParam(st); err != nil {
				s.renderError(w, r, http.StatusBadRequest, err.Error())
				return
			}
		}
		what = fmt.Sprintf("%d selected job(s)", len(f.IDs))
	}
	var run func(context.Context, pgq.JobFilter, ...pgq.BulkOption) (int64, error)
	switch verb {
	case "cancel":
		run = s.q.CancelJobs
		f.Statuses = only(f.Statuses, pgq.StatusQueued, pgq.StatusPicked)
	case "delete":
		run = s.q.DeleteJobs
		if len(f.Statuses) == 0 {
			f.Statuses = []pgq.Status{pgq.StatusQueued, pgq.StatusFailed}
		}
		f.Statuses = only(f.Statuses, pgq.StatusQueued, pgq.StatusFailed)
	case "requeue":
		run = s.q.RequeueJobs
		f.Statuses = only(f.Statuses, pgq.StatusFailed)
	default:
		s.renderError(w, r, http.StatusNotFound, fmt.Sprintf("No action %q: want cancel, delete or requeue.", verb))
		return
	}
	b := base(r)
	back := r.PostFormValue("back")
	if !strings.HasPrefix(back, "/") || strings.HasPrefix(back, "//") || strings.HasPrefix(back, "/\\") {
		back = "/jobs"
	}
	idb := make([]byte, 6)
	_, _ = rand.Read(idb)
	t := &task{ID: hex.EncodeToString(idb), Verb: verb, What: what, Started: time.Now().UTC(), Back: back, done: make(chan struct{})}
	s.tasks.add(t)
	if f.Statuses == nil {
		// Nothing the verb may touch was asked for (cancel of held jobs):
		// an empty filter would mean "all".
		t.finish(nil, s)
	} else {
		s.tasks.group.Go(func() {
			_, err := run(s.cfg.ctx, f, pgq.WithBulkProgress(func(n int64) {
				t.touched.Store(n)
				s.hub.touch()
			}))
			if err != nil {
				s.cfg.logger.Warn("pgqweb: action failed", "action", verb, "on", what, "err", err)
			}
			t.finish(err, s)
		})
	}
	// A short action is done before the next page: go back to where it
	// came from; a long one shows its progress.
	select {
	case <-t.done:
		if t.err == nil && r.PostFormValue("all") != "1" {
			http.Redirect(w, r, b+back, http.StatusSeeOther)
			return
		}
	case <-time.After(time.Second):
	}
	http.Redirect(w, r, b+"/tasks/"+t.ID, http.StatusSeeOther)
}

func (t *task) finish(err error, s *server) {
	t.mu.Lock()
	t.ended, t.err = time.Now().UTC(), err
	t.mu.Unlock()
	close(t.done)
	s.hub.touch()
}

// only keeps the statuses of want in have (all of want when have is
// empty); nil when none is left.
func only(have []pgq.Status, want ...pgq.Status) []pgq.Status {
	if len(have) == 0 {
		return want
	}
	var out []pgq.Status
	for _, s := range have {
		for _, w := range want {
			if s == w {
				out = append(out, s)
			}
		}
	}
	return out
}

func describe(d jobsData) string {
	var parts []string
	if d.Status != "" {
		parts = append(parts, "status "+d.Status)
	}
	if d.Entrypoint != "" {
		parts = append(parts, "entrypoint "+strconv.Quote(d.Entrypoint))
	}
	if d.Dedupe != "" {
		parts = append(parts, "dedupe key "+strconv.Quote(d.Dedupe))
	}
	if len(parts) == 0 {
		return "all jobs"
	}
	return "all jobs with " + strings.Join(parts, ", ")
}
