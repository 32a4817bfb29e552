package pgqweb

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/pgq-dev/pgq"
)

// pageData is what every page's template gets.
type pageData struct {
	Base    string // the mount prefix, "" at the root
	Page    string
	Title   string
	CSRF    string
	Actions bool
	Asset   string // assetVersion
	LiveSrc string // the page's live stream
	Now     time.Time
	// Banner says what is wrong with the database ("" when nothing);
	// Install is set when the schema is missing.
	Banner  string
	Install bool
	// Problem is the page's own error (bad input), with Status.
	Problem string
	Status  int
	Data    any
}

// views renders pages and their live parts, sharing each read among the
// open pages showing the same view.
type views struct {
	s     *server
	tmpl  *template.Template
	mu    sync.Mutex
	cache map[string]*cached
	reads atomic.Int64 // live parts read from the database, for tests
}

// cached is the live part of one view as of a hub version.
type cached struct {
	mu      sync.Mutex
	version uint64
	valid   bool
	html    string
	used    time.Time
}

var funcs = template.FuncMap{
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return "–"
		}
		d := now.Sub(t)
		if d < 0 {
			return "in " + fmtDuration(-d)
		}
		return fmtDuration(d) + " ago"
	},
	"dur":   fmtDuration,
	"stamp": func(t time.Time) string { return stamp(t) },
	"num":   func(n int64) string { return groupDigits(n) },
	"int":   func(n int) string { return groupDigits(int64(n)) },
	"lower": strings.ToLower,
	"plus":  func(a, b int) int { return a + b },
	// percent renders a progress fraction in [0, 1] as a whole percentage.
	"percent": func(f float64) string { return fmt.Sprintf("%.0f%%", f*100) },
	"minus":   func(a, b int) int { return a - b },
	"query": func(kv ...string) template.URL {
		v := url.Values{}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] != "" {
				v.Set(kv[i], kv[i+1])
			}
		}
		if len(v) == 0 {
			return ""
		}
		return template.URL("?" + v.Encode())
	},
	"short": func(s string) string {
		if len(s) > 8 {
			return s[:8]
		}
		return s
	},
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000 UTC")
}

// groupDigits writes n with thin separators: 1,234,567.
func groupDigits(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func newViews(s *server) *views {
	t := template.Must(template.New("").Funcs(funcs).ParseFS(files, "templates/*.html"))
	return &views{s: s, tmpl: t, cache: map[string]*cached{}}
}

// route names the view of a path: the page and its argument (a job or
// task id).
func route(path string) (page, arg string, ok bool) {
	switch path {
	case "/", "":
		return "overview", "", true
	case "/jobs", "/held", "/schedules", "/events":
		return path[1:], "", true
	}
	for _, p := range []string{"/jobs/", "/tasks/"} {
		if rest, found := strings.CutPrefix(path, p); found && rest != "" && !strings.Contains(rest, "/") {
			return map[string]string{"/jobs/": "job", "/tasks/": "task"}[p], rest, true
		}
	}
	return "", "", false
}

// page serves a whole page.
func (s *server) page(string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name, arg, ok := route(r.URL.Path)
		if !ok {
			s.renderError(w, r, http.StatusNotFound, "No such page: "+r.URL.Path)
			return
		}
		d := s.load(r.Context(), base(r), name, arg, r.URL.Query())
		view := r.URL.Path
		if r.URL.RawQuery != "" {
			view += "?" + r.URL.RawQuery
		}
		d.LiveSrc = d.Base + "/live?view=" + url.QueryEscape(view)
		s.render(w, d)
	}
}

func (s *server) render(w http.ResponseWriter, d *pageData) {
	var buf bytes.Buffer
	if err := s.views.tmpl.ExecuteTemplate(&buf, "layout", d); err != nil {
		s.cfg.logger.Error("pgqweb: template", "page", d.Page, "err", err)
		http.Error(w, "500 template error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(d.Status)
	_, _ = w.Write(buf.Bytes())
}

func (s *server) renderError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	s.render(w, &pageData{Base: base(r), Page: "error", Title: http.StatusText(status), Asset: assetVersion,
		Actions: s.cfg.actions, Now: time.Now().UTC(), Problem: msg, Status: status})
}

// load reads what the page shows.
func (s *server) load(ctx context.Context, base, name, arg string, query url.Values) *pageData {
	d := &pageData{Base: base, Page: name, CSRF: s.csrf, Actions: s.cfg.actions, Asset: assetVersion,
		Now: time.Now().UTC(), Status: http.StatusOK}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var err error
	switch name {
	case "overview":
		d.Title = "Overview"
		d.Data, err = s.overview(ctx)
	case "jobs":
		d.Title = "Jobs"
		d.Data, err = s.jobs(ctx, query)
	case "job":
		d.Title = "Job " + arg
		d.Data, err = s.job(ctx, arg)
	case "held":
		d.Title = "Held jobs"
		d.Data, err = s.held(ctx)
	case "schedules":
		d.Title = "Schedules"
		d.Data, err = s.schedules(ctx)
	case "events":
		d.Title = "Events"
		d.Data = s.eventsData()
	case "task":
		d.Title = "Action " + arg
		d.Data, err = s.task(arg)
	}
	var pe *problem
	if err != nil {
		d.Data = nil
	}
	switch {
	case err == nil:
	case errors.As(err, &pe):
		d.Problem, d.Status = pe.msg, pe.status
	case errors.Is(err, pgq.ErrSchemaMissing):
		d.Banner, d.Install, d.Status = err.Error(), true, http.StatusServiceUnavailable
	default:
		d.Banner, d.Status = err.Error(), http.StatusServiceUnavailable
	}
	return d
}

// problem is bad input: a page that says what is wrong, with its status.
type problem struct {
	status int
	msg    string
}

func (p *problem) Error() string { return p.msg }

// live streams a view's live part (server-sent events) each time it
// changes, until the page closes.
func (s *server) live(w http.ResponseWriter, r *http.Request) {
	view := r.URL.Query().Get("view")
	u, err := url.Parse(view)
	if err != nil || !strings.HasPrefix(u.Path, "/") {
		http.Error(w, "400 bad view", http.StatusBadRequest)
		return
	}
	name, arg, ok := route(u.Path)
	if !ok {
		http.Error(w, "404 no such view", http.StatusNotFound)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "500 streaming unsupported", http.StatusInternalServerError)
		return
	}
	b := base(r)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 2000\n\n")
	flusher.Flush()

	unsubscribe := s.hub.subscribe()
	defer unsubscribe()
	ctx := r.Context()
	var sent string
	keepalive := time.NewTicker(20 * time.Second)
	defer keepalive.Stop()
	for {
		version, changed := s.hub.state()
		html := s.views.liveHTML(ctx, b, name, arg, u, version)
		if ctx.Err() != nil {
			return
		}
		if html != sent {
			var msg strings.Builder
			msg.WriteString("event: live\n")
			for line := range strings.SplitSeq(html, "\n") {
				msg.WriteString("data: " + line + "\n")
			}
			msg.WriteString("\n")
			if _, err := fmt.Fprint(w, msg.String()); err != nil {
				return
			}
			flusher.Flush()
			sent = html
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-keepalive.C: // the render above is then the cached one
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			flusher.Flush()
		}
	}
}

// liveHTML renders the live part of a view as of version, once per
// version for all the pages showing it.
func (v *views) liveHTML(ctx context.Context, base, name, arg string, u *url.URL, version uint64) string {
	key := base + "\x00" + u.String()
	v.mu.Lock()
	c := v.cache[key]
	if c == nil {
		c = &cached{}
		v.cache[key] = c
	}
	now := time.Now()
	c.used = now
	for k, e := range v.cache { // forget views nobody showed for a while
		if now.Sub(e.used) > 5*time.Minute {
			delete(v.cache, k)
		}
	}
	v.mu.Unlock()

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.valid && c.version == version {
		return c.html
	}
	d := v.s.load(ctx, base, name, arg, u.Query())
	v.reads.Add(1)
	var buf bytes.Buffer
	if err := v.tmpl.ExecuteTemplate(&buf, "live", d); err != nil {
		v.s.cfg.logger.Error("pgqweb: template", "page", name, "err", err)
		return c.html
	}
	if ctx.Err() == nil {
		c.version, c.valid, c.html = version, true, buf.String()
	}
	return buf.String()
}

// ---------------------------------------------------------------------------
// Pages

type depthRow struct {
	Entrypoint             string
	Queued, Picked, Failed int64
	OldestWait             time.Duration
}

type overviewData struct {
	Stats        pgq.Stats
	Rows         []depthRow
	Total        depthRow
	Chart        chart
	LastHourJobs int64
	LastHourErrs int64
	Listening    bool
}

func (s *server) overview(ctx context.Context) (*overviewData, error) {
	st, err := s.q.Stats(ctx, pgq.WithStatsErrors(10))
	if err != nil {
		return nil, err
	}
	act, err := s.q.Activity(ctx, time.Hour, time.Minute)
	if err != nil {
		return nil, err
	}
	o := &overviewData{Stats: st, Listening: s.hub.isListening()}
	by := map[string]*depthRow{}
	for _, q := range st.Queue {
		r := by[q.Entrypoint]
		if r == nil {
			r = &depthRow{Entrypoint: q.Entrypoint}
			by[q.Entrypoint] = r
		}
		switch q.Status {
		case pgq.StatusQueued:
			r.Queued += q.Count
			o.Total.Queued += q.Count
		case pgq.StatusPicked:
			r.Picked += q.Count
			o.Total.Picked += q.Count
		case pgq.StatusFailed:
			r.Failed += q.Count
			o.Total.Failed += q.Count
		}
		r.OldestWait = max(r.OldestWait, q.OldestWait)
	}
	o.Total.OldestWait = st.OldestQueued
	for _, r := range by {
		o.Rows = append(o.Rows, *r)
	}
	slices.SortFunc(o.Rows, func(a, b depthRow) int { return strings.Compare(a.Entrypoint, b.Entrypoint) })
	for _, b := range act {
		o.LastHourJobs += b.Finished()
		o.LastHourErrs += b.Errors()
	}
	o.Chart = newChart(act, time.Minute, st.At)
	return o, nil
}

type jobsData struct {
	Entrypoint, Status, Dedupe, Cursor string
	Page                               pgq.JobPage
	Rows                               []jobRow
	Filtered                           bool
}

type jobRow struct {
	pgq.JobInfo
	Preview string
}

// statusParam reads a status filter: "" for all, else a live status.
func statusParam(s string) ([]pgq.Status, error) {
	switch s {
	case "":
		return nil, nil
	case "queued", "picked", "failed":
		return []pgq.Status{pgq.Status(s)}, nil
	}
	return nil, &problem{http.StatusBadRequest, fmt.Sprintf("Unknown status %q: want queued, picked or failed.", s)}
}

func (s *server) jobs(ctx context.Context, query url.Values) (*jobsData, error) {
	d := &jobsData{Entrypoint: strings.TrimSpace(query.Get("entrypoint")), Status: query.Get("status"),
		Dedupe: query.Get("dedupe"), Cursor: query.Get("cursor")}
	f, err := d.filter()
	if err != nil {
		return d, err
	}
	f.Limit, f.Cursor = 50, d.Cursor
	d.Filtered = d.Entrypoint != "" || d.Status != "" || d.Dedupe != ""
	d.Page, err = s.q.ListJobs(ctx, f)
	if errors.Is(err, pgq.ErrInvalidCursor) {
		return d, &problem{http.StatusBadRequest, "This page's cursor is not valid (changed, or made for another filter): start from the first page."}
	}
	if err != nil {
		return d, err
	}
	for _, j := range d.Page.Jobs {
		d.Rows = append(d.Rows, jobRow{JobInfo: j, Preview: preview(j.Payload, j.PayloadSize)})
	}
	return d, nil
}

func (d *jobsData) filter() (pgq.JobFilter, error) {
	var f pgq.JobFilter
	if d.Entrypoint != "" {
		f.Entrypoints = []string{d.Entrypoint}
	}
	var err error
	f.Statuses, err = statusParam(d.Status)
	f.DedupeKey = d.Dedupe
	return f, err
}

// preview shows the start of a payload as text: printable UTF-8 as it is
// (the template escapes it), anything else as hex.
func preview(p []byte, size int) string {
	const n = 80
	if len(p) == 0 {
		return ""
	}
	var s string
	if utf8.Valid(p) || size > len(p) && utf8.Valid(p[:max(0, len(p)-3)]) {
		s = strings.ToValidUTF8(string(p), "")
		if len([]rune(s)) > n {
			s = string([]rune(s)[:n])
		}
	} else {
		s = fmt.Sprintf("0x%x", p[:min(len(p), n/2)])
	}
	if size > len(s) {
		s += "…"
	}
	return s
}

type jobData struct {
	Info      *pgq.JobInfo
	Payload   string
	JSON      bool
	Binary    bool
	History   []historyRow
	HeaderKey []string
}

type historyRow struct {
	pgq.LogEntry
	Message, Type, Trace string
	Raw                  string
}

func (s *server) job(ctx context.Context, arg string) (*jobData, error) {
	id, err := strconv.ParseInt(arg, 10, 64)
	if err != nil || id <= 0 {
		return nil, &problem{http.StatusBadRequest, fmt.Sprintf("%q is not a job id.", arg)}
	}
	info, err := s.q.GetJob(ctx, pgq.JobID(id))
	if errors.Is(err, pgq.ErrJobNotFound) {
		return nil, &problem{http.StatusNotFound, fmt.Sprintf("No job %d: it never existed, or it finished and its log was pruned.", id)}
	}
	if err != nil {
		return nil, err
	}
	hist, err := s.q.JobHistory(ctx, pgq.JobID(id))
	if err != nil {
		return nil, err
	}
	d := &jobData{Info: info}
	switch {
	case info.Payload == nil:
	case json.Valid(info.Payload):
		var buf bytes.Buffer
		if json.Indent(&buf, info.Payload, "", "  ") == nil {
			d.Payload, d.JSON = buf.String(), true
		}
	case utf8.Valid(info.Payload):
		d.Payload = string(info.Payload)
	default:
		d.Payload, d.Binary = fmt.Sprintf("%x", info.Payload), true
	}
	for k := range info.Headers {
		d.HeaderKey = append(d.HeaderKey, k)
	}
	slices.Sort(d.HeaderKey)
	for _, e := range hist {
		h := historyRow{LogEntry: e}
		if len(e.Traceback) > 0 {
			var tb struct {
				Type    string `json:"exception_type"`
				Message string `json:"exception_message"`
				Trace   string `json:"traceback"`
			}
			if json.Unmarshal(e.Traceback, &tb) == nil {
				h.Type, h.Message, h.Trace = tb.Type, tb.Message, tb.Trace
			} else {
				h.Raw = string(e.Traceback)
			}
		}
		d.History = append(d.History, h)
	}
	return d, nil
}

type heldData struct {
	Jobs  []pgq.FailedJob
	Limit int
}

func (s *server) held(ctx context.Context) (*heldData, error) {
	const limit = 200
	jobs, err := s.q.ListFailed(ctx, limit)
	return &heldData{Jobs: jobs, Limit: limit}, err
}

func (s *server) schedules(ctx context.Context) ([]pgq.ScheduleInfo, error) {
	return s.q.ListSchedules(ctx)
}

type eventsData struct {
	Events    []eventRow
	Listening bool
}

type eventRow struct {
	At      time.Time
	Type    string
	Detail  string
	SentAt  time.Time
	Payload string
}

func (s *server) eventsData() *eventsData {
	d := &eventsData{Listening: s.hub.isListening()}
	for _, e := range s.hub.latestEvents() {
		r := eventRow{At: e.At, Type: e.Event.Type, SentAt: e.Event.SentAt}
		switch {
		case !e.OK:
			r.Type, r.Detail = "unparsed", e.Payload
		case e.Event.Type == pgq.EventTableChanged:
			r.Detail = "operation=" + e.Event.Operation + " table=" + e.Event.Table
		case e.Event.Type == pgq.EventCancellation:
			ids := make([]string, 0, len(e.Event.IDs))
			for _, id := range e.Event.IDs[:min(len(e.Event.IDs), 20)] {
				ids = append(ids, strconv.FormatInt(int64(id), 10))
			}
			r.Detail = "ids=" + strings.Join(ids, ",")
			if len(e.Event.IDs) > 20 {
				r.Detail += fmt.Sprintf(" (+%d more)", len(e.Event.IDs)-20)
			}
		case e.Event.Type == pgq.EventHealthCheck:
			r.Detail = "id=" + e.Event.ID.String()
		}
		d.Events = append(d.Events, r)
	}
	return d
}

func (s *server) task(arg string) (*taskView, error) {
	t := s.tasks.get(arg)
	if t == nil {
		return nil, &problem{http.StatusNotFound, fmt.Sprintf("No action %q in this process (actions are kept until it restarts; the latest %d).", arg, keptTasks)}
	}
	return t.view(), nil
}
