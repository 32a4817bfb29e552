package pgqweb_test

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqtest"
	"github.com/pgq-dev/pgq/pgqweb"
)

func TestMain(m *testing.M) { pgqtest.Main(m) }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// seeded is what seed put in the database.
type seeded struct {
	queued, held, html pgq.JobID
}

// seed enqueues jobs of entrypoints "mail" and "sms", holds one (a worker's
// handler fails with pgq.Hold... here by SQL with a traceback in the log),
// and enqueues one whose payload is HTML.
func seed(t *testing.T, ctx context.Context, db *sql.DB) seeded {
	t.Helper()
	q := pgq.NewQueries(db)
	jobs := make([]pgq.NewJob, 60)
	for i := range jobs {
		jobs[i] = pgq.NewJob{Entrypoint: []string{"mail", "sms"}[i%3/2], Payload: []byte(`{"to":"user` + string(rune('a'+i%26)) + `"}`)}
	}
	ids, err := q.EnqueueBatch(ctx, jobs)
	if err != nil {
		t.Fatal(err)
	}
	var s seeded
	s.queued = ids[0]
	s.held = ids[1]
	if _, err := db.ExecContext(ctx, `WITH h AS (UPDATE pgqueuer SET status = 'failed', attempts = 3 WHERE id = $1 RETURNING id, priority, entrypoint)
		INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint, traceback)
		SELECT id, 'failed', priority, entrypoint, '{"exception_type":"ValueError","exception_message":"smtp said no","traceback":"line 1\nline 2"}' FROM h`,
		int64(s.held)); err != nil {
		t.Fatal(err)
	}
	if s.html, err = q.Enqueue(ctx, "mail", []byte(`<script>alert("x")</script><b>bold</b>`)); err != nil {
		t.Fatal(err)
	}
	return s
}

// serve mounts the dashboard under /queue/ of a test server.
func serve(t *testing.T, db *sql.DB, opts ...pgqweb.Option) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	mux := http.NewServeMux()
	mux.Handle("/queue/", http.StripPrefix("/queue", pgqweb.Handler(db, append([]pgqweb.Option{pgqweb.WithContext(ctx)}, opts...)...)))
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		cancel()
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv.URL + "/queue"
}

type response struct {
	status int
	header http.Header
	body   string
}

func get(t *testing.T, u string) response {
	t.Helper()
	res, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return response{res.StatusCode, res.Header, string(b)}
}

// noRedirect is a client that shows redirects instead of following them.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func post(t *testing.T, u string, form url.Values, header map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return response{res.StatusCode, res.Header, string(b)}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no CSRF token on the page")
	}
	return m[1]
}

func eachDriver(t *testing.T, f func(t *testing.T, db *sql.DB, dsn string)) {
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			db, dsn := pgqtest.NewDB(t, d)
			f(t, db, dsn)
		})
	}
}

// Every page answers, under the prefix it is mounted at, with a strict
// CSP; bad input gets 400 or 404 pages, not 500s; payloads are escaped.
func TestPages(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		s := seed(t, ctx, db)
		base := serve(t, db, pgqweb.WithListenDSN(dsn))
		for _, c := range []struct {
			path   string
			status int
			want   []string
		}{
			{"/", 200, []string{"Queue by entrypoint", `href="/queue/jobs?entrypoint=mail"`, "Last hour", "<svg"}},
			{"/jobs", 200, []string{`href="/queue/jobs/` + itoa(s.html) + `"`, "next page"}},
			{"/jobs?entrypoint=sms&status=queued", 200, []string{"sms"}},
			{"/jobs?entrypoint=nothing-like-it", 200, []string{"No job matches this filter"}},
			{"/jobs/" + itoa(s.held), 200, []string{"smtp said no", "line 2", "ValueError", "held"}},
			{"/jobs/" + itoa(s.html), 200, []string{`&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;`}},
			{"/held", 200, []string{"smtp said no"}},
			{"/schedules", 200, []string{"No schedule"}},
			{"/events", 200, []string{"Events"}},
			{"/jobs/987654321", 404, []string{"No job 987654321"}},
			{"/jobs/abc", 400, []string{`&#34;abc&#34; is not a job id`}},
			{"/jobs?cursor=AQAAAAAAAAB7", 400, []string{"cursor is not valid"}},
			{"/jobs?status=bogus", 400, []string{"Unknown status"}},
			{"/tasks/nope", 404, []string{"No action"}},
			{"/nothing", 404, []string{"No such page"}},
			{"/static/app.js", 200, []string{"EventSource"}},
		} {
			r := get(t, base+c.path)
			if r.status != c.status {
				t.Errorf("GET %s: %d, want %d\n%s", c.path, r.status, c.status, r.body)
				continue
			}
			for _, w := range c.want {
				if !strings.Contains(r.body, w) {
					t.Errorf("GET %s: no %q in\n%s", c.path, w, r.body)
				}
			}
			if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
				t.Errorf("GET %s: CSP %q", c.path, csp)
			}
			if strings.Contains(r.body, "<script>") || regexp.MustCompile(`<script[^>]*>[^<]`).MatchString(r.body) || strings.Contains(r.body, " style=") {
				t.Errorf("GET %s: inline script or style in\n%s", c.path, r.body)
			}
		}
		// A cursor of the page is valid for its filter only.
		page := get(t, base+"/jobs").body
		next := regexp.MustCompile(`cursor=([A-Za-z0-9_-]+)`).FindStringSubmatch(page)
		if next == nil {
			t.Fatal("no next page link")
		}
		if r := get(t, base+"/jobs?cursor="+next[1]); r.status != 200 || !strings.Contains(r.body, "first page") {
			t.Errorf("second page: %d", r.status)
		}
		if r := get(t, base+"/jobs?entrypoint=sms&cursor="+next[1]); r.status != 400 {
			t.Errorf("a cursor of another filter: %d, want 400", r.status)
		}
	})
}

func itoa(id pgq.JobID) string { return strconv.FormatInt(int64(id), 10) }

// Actions: refused (403, nothing changed) when read-only, without the CSRF
// token, or from another origin; done with them; basic auth guards all.
func TestActions(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		s := seed(t, ctx, db)
		count := func(where string) int {
			var n int
			if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pgqueuer WHERE `+where).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		queued := count(`status = 'queued'`)

		ro := serve(t, db)
		if r := get(t, ro+"/jobs"); strings.Contains(r.body, "/actions/") || !strings.Contains(r.body, "read-only") {
			t.Error("the read-only dashboard offers actions")
		}
		if r := post(t, ro+"/actions/cancel", url.Values{"all": {"1"}}, nil); r.status != 403 || count(`status = 'queued'`) != queued {
			t.Errorf("read-only: cancel all: %d", r.status)
		}

		rw := serve(t, db, pgqweb.WithActions(), pgqweb.WithBasicAuth("ops", "s3cret"))
		if r := get(t, rw+"/"); r.status != 401 || r.header.Get("WWW-Authenticate") == "" {
			t.Errorf("no credentials: %d, want 401", r.status)
		}
		auth := func(u string) string { return strings.Replace(u, "http://", "http://ops:s3cret@", 1) }
		page := get(t, auth(rw)+"/jobs")
		if page.status != 200 || !strings.Contains(page.body, `action="/queue/actions/cancel"`) {
			t.Fatalf("jobs page with actions: %d", page.status)
		}
		token := csrfOf(t, page.body)
		all := url.Values{"all": {"1"}, "entrypoint": {"sms"}, "status": {"queued"}}
		if r := post(t, auth(rw)+"/actions/cancel", all, nil); r.status != 403 || count(`status = 'queued'`) != queued {
			t.Errorf("no CSRF token: %d, want 403; %d queued, want %d", r.status, count(`status = 'queued'`), queued)
		}
		all.Set("csrf", token+"x")
		if r := post(t, auth(rw)+"/actions/cancel", all, nil); r.status != 403 {
			t.Errorf("a wrong CSRF token: %d, want 403", r.status)
		}
		all.Set("csrf", token)
		if r := post(t, auth(rw)+"/actions/cancel", all, map[string]string{"Sec-Fetch-Site": "cross-site"}); r.status != 403 || count(`status = 'queued'`) != queued {
			t.Errorf("cross-site: %d, want 403", r.status)
		}
		if r := post(t, rw+"/actions/cancel", all, nil); r.status != 401 {
			t.Errorf("no basic auth: %d, want 401", r.status)
		}
		sms := count(`status = 'queued' AND entrypoint = 'sms'`)
		r := post(t, auth(rw)+"/actions/cancel", all, nil)
		if r.status != 303 || !strings.HasPrefix(r.header.Get("Location"), "/queue/tasks/") {
			t.Fatalf("cancel all queued sms: %d %s", r.status, r.header.Get("Location"))
		}
		task := get(t, auth(strings.TrimSuffix(rw, "/queue"))+r.header.Get("Location"))
		if !strings.Contains(task.body, "Done: "+itoa(pgq.JobID(sms))+" jobs") {
			t.Errorf("task page:\n%s", task.body)
		}
		if n := count(`entrypoint = 'sms' AND status = 'queued'`); n != 0 || count(`status = 'queued'`) != queued-sms {
			t.Errorf("after cancel of queued sms: %d left", n)
		}
		// One held job requeued from its page: back to its page.
		r = post(t, auth(rw)+"/actions/requeue", url.Values{"csrf": {token}, "id": {itoa(s.held)}, "back": {"/jobs/" + itoa(s.held)}}, nil)
		if r.status != 303 || r.header.Get("Location") != "/queue/jobs/"+itoa(s.held) || count(`status = 'failed'`) != 0 {
			t.Errorf("requeue held %d: %d %s, %d held", s.held, r.status, r.header.Get("Location"), count(`status = 'failed'`))
		}
		for _, bad := range []url.Values{
			{"csrf": {token}},              // nothing selected
			{"csrf": {token}, "id": {"x"}}, // not an id
			{"csrf": {token}, "all": {"1"}, "status": {"nope"}},
		} {
			if r := post(t, auth(rw)+"/actions/delete", bad, nil); r.status != 400 {
				t.Errorf("delete %v: %d, want 400", bad, r.status)
			}
		}
		if r := post(t, auth(rw)+"/actions/explode", url.Values{"csrf": {token}, "id": {"1"}}, nil); r.status != 404 {
			t.Errorf("unknown action: %d, want 404", r.status)
		}
	})
}

// sse reads a live stream's events (their data joined) into a channel.
func sse(t *testing.T, ctx context.Context, u string) <-chan string {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("GET %s: %d %s", u, res.StatusCode, res.Header.Get("Content-Type"))
	}
	out := make(chan string, 100)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer res.Body.Close()
		defer close(out)
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		var data []string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "data: "):
				data = append(data, strings.TrimPrefix(line, "data: "))
			case line == "" && data != nil:
				select {
				case out <- strings.Join(data, "\n"):
				case <-ctx.Done():
					return
				}
				data = nil
			}
		}
	})
	t.Cleanup(wg.Wait)
	return out
}

// waitFor returns the first event of the stream that has want in it.
func waitFor(t *testing.T, events <-chan string, within time.Duration, want string) string {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("the stream ended before %q", want)
			}
			if strings.Contains(ev, want) {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %q on the live stream within %v", want, within)
		}
	}
}

// The live stream of the overview shows a job that a worker finishes
// within 3 s; a database that goes away shows on the page, which recovers
// when it is back.
func TestLive(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		// The dashboard reaches the database through a proxy the test can cut.
		p := newProxy(t, dsn)
		proxied := p.dsn(t, dsn)
		wdb, err := sql.Open(map[bool]string{true: "pgx", false: "postgres"}[strings.Contains(t.Name(), "pgx")], proxied)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { wdb.Close() })
		wdb.SetConnMaxIdleTime(time.Second)
		base := serve(t, wdb, pgqweb.WithListenDSN(proxied))
		q := pgq.NewQueries(db)
		id, err := q.Enqueue(ctx, "live", nil)
		if err != nil {
			t.Fatal(err)
		}
		sctx, stop := context.WithCancel(ctx)
		defer stop()
		events := sse(t, sctx, base+"/live?view="+url.QueryEscape("/"))
		waitFor(t, events, 10*time.Second, `data-count="live/queued">1<`)
		// Let the listener connect before the job runs.
		time.Sleep(500 * time.Millisecond)

		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		if err := qm.Entrypoint("live", func(context.Context, *pgq.Job) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if err := qm.Run(ctx, pgq.WithMode(pgq.ModeDrain)); err != nil {
			t.Fatal(err)
		}
		finished := time.Now()
		waitFor(t, events, 3*time.Second, "The job table is empty")
		t.Logf("finished job %d shown after %v", id, time.Since(finished))

		p.cut()
		waitFor(t, events, 15*time.Second, "The database cannot be reached")
		p.restore()
		waitFor(t, events, 15*time.Second, "The job table is empty")
	})
}

// Without the schema, pages say to run pgq install.
func TestSchemaMissing(t *testing.T) {
	db, _ := pgqtest.NewDB(t, "pgx", pgqtest.Bare())
	base := serve(t, db)
	for _, p := range []string{"/", "/jobs", "/held", "/schedules", "/jobs/1"} {
		r := get(t, base+p)
		if r.status != 503 || !strings.Contains(r.body, "<code>pgq install</code>") {
			t.Errorf("GET %s without the schema: %d\n%s", p, r.status, r.body)
		}
	}
}

// proxy forwards TCP connections to the database until cut.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	down   bool
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, dsn string) *proxy {
	t.Helper()
	target, err := hostPort(dsn)
	if err != nil {
		t.Skipf("the test DSN has no TCP host and port: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Go(func() { _, _ = io.Copy(s, c); s.Close() })
		p.wg.Go(func() { _, _ = io.Copy(c, s); c.Close() })
	}
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

// dsn returns dsn (keyword/value or URL) with its host and port replaced
// by the proxy's.
func (p *proxy) dsn(t *testing.T, dsn string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(p.ln.Addr().String())
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		u.Host = p.ln.Addr().String()
		return u.String()
	}
	kv := keywords(dsn)
	kv["host"], kv["port"] = host, port
	var parts []string
	for k, v := range kv {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, " ")
}

// keywords splits a keyword/value DSN without quoted values.
func keywords(dsn string) map[string]string {
	kv := map[string]string{}
	for _, f := range strings.Fields(dsn) {
		if k, v, ok := strings.Cut(f, "="); ok {
			kv[k] = v
		}
	}
	return kv
}

// hostPort returns the database's TCP address: the DSN's host and port,
// or, for a socket directory, 127.0.0.1 and the port (the test server
// listens on both).
func hostPort(dsn string) (string, error) {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		if u.Port() == "" {
			return "", errors.New("no port in " + u.Redacted())
		}
		return net.JoinHostPort(strings.ReplaceAll(u.Hostname(), "localhost", "127.0.0.1"), u.Port()), nil
	}
	kv := keywords(dsn)
	if kv["port"] == "" || strings.ContainsAny(dsn, "'") {
		return "", errors.New("no port, or quoted values, in the DSN")
	}
	host := kv["host"]
	if host == "" || strings.HasPrefix(host, "/") || host == "localhost" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, kv["port"]), nil
}

// Tabs showing the same page share each read: 20 live streams of the
// overview cost the database what one costs.
func TestSharedReads(t *testing.T) {
	db, dsn := pgqtest.NewDB(t, "pgx")
	ctx := testCtx(t)
	h := pgqweb.Handler(db, pgqweb.WithListenDSN(dsn), pgqweb.WithContext(ctx))
	srv := httptest.NewServer(h)
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close() })
	q := pgq.NewQueries(db)
	if _, err := q.Enqueue(ctx, "shared", nil); err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	const tabs = 20
	streams := make([]<-chan string, tabs)
	for i := range streams {
		streams[i] = sse(t, sctx, srv.URL+"/live?view=%2F")
	}
	for _, s := range streams {
		waitFor(t, s, 10*time.Second, `data-count="shared/queued">1<`)
	}
	before := pgqweb.LiveReads(h)
	for i := 2; i <= 4; i++ {
		if _, err := q.Enqueue(ctx, "shared", nil); err != nil {
			t.Fatal(err)
		}
		for _, s := range streams {
			waitFor(t, s, 5*time.Second, `data-count="shared/queued">`+strconv.Itoa(i)+`<`)
		}
	}
	reads := pgqweb.LiveReads(h) - before
	t.Logf("%d tabs, 3 changes: %d reads of the overview (%d before the changes)", tabs, reads, before)
	if before >= tabs/2 || reads > 6 {
		t.Errorf("%d tabs: %d reads to open, %d for 3 changes; want one per change, shared", tabs, before, reads)
	}
}

// A queue with a prefix (PGQueuer's PGQUEUER_PREFIX) is shown with
// WithPrefix; without it, the page says the schema is missing.
func TestPrefix(t *testing.T) {
	db, _ := pgqtest.NewDB(t, "pgx", pgqtest.Bare())
	ctx := testCtx(t)
	if err := pgq.Install(ctx, db, pgq.WithPrefix("app_")); err != nil {
		t.Fatal(err)
	}
	if _, err := pgq.NewQueries(db, pgq.WithPrefix("app_")).Enqueue(ctx, "prefixed", []byte(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	if r := get(t, serve(t, db, pgqweb.WithPrefix("app_"))+"/jobs"); r.status != 200 || !strings.Contains(r.body, "prefixed") {
		t.Errorf("with the prefix: %d\n%s", r.status, r.body)
	}
	if r := get(t, serve(t, db)+"/"); r.status != 503 || !strings.Contains(r.body, "pgq install") {
		t.Errorf("without the prefix: %d", r.status)
	}
}
