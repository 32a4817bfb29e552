package pgqweb_test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqtest"
)

// The end-to-end tests drive headless Chromium (Debian's chromium package;
// installed with apt-get when missing and the tests run as root) against
// `pgq web` on a seeded database, with a live worker. Without a Chromium
// that starts they skip, saying so in one line.

var chromium struct {
	once sync.Once
	path string
	err  error
}

// findChromium returns the Chromium to run, installing Debian's package
// when there is none and the process is root with apt-get.
func findChromium(t *testing.T) string {
	t.Helper()
	chromium.once.Do(func() {
		chromium.path, chromium.err = locateChromium()
		if chromium.err == nil {
			return
		}
		apt, err := exec.LookPath("apt-get")
		if os.Geteuid() != 0 || err != nil {
			return
		}
		t.Logf("no Chromium; installing Debian's chromium package with apt-get")
		install := func(args ...string) error {
			cmd := exec.Command(apt, args...)
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("apt-get %s: %w\n%s", strings.Join(args, " "), err, out)
			}
			return nil
		}
		err = install("install", "-y", "--no-install-recommends", "chromium")
		if err != nil { // the package lists may be missing or stale
			if err = install("update"); err == nil {
				err = install("install", "-y", "--no-install-recommends", "chromium")
			}
		}
		if chromium.path, chromium.err = locateChromium(); chromium.err != nil && err != nil {
			chromium.err = err
		}
	})
	if chromium.err != nil {
		t.Skipf("browser tests skipped: %v", chromium.err)
	}
	return chromium.path
}

func locateChromium() (string, error) {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no chromium, chromium-browser or google-chrome on PATH (Debian: apt-get install chromium)")
}

// buildPgq builds the pgq command once per test process.
var pgqBinary struct {
	once sync.Once
	path string
	err  error
}

func buildPgq(t *testing.T) string {
	t.Helper()
	pgqBinary.once.Do(func() {
		dir, err := os.MkdirTemp("", "pgqweb-bin-")
		if err != nil {
			pgqBinary.err = err
			return
		}
		pgqBinary.path = filepath.Join(dir, "pgq")
		cmd := exec.Command("go", "build", "-o", pgqBinary.path, "./cmd/pgq")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			pgqBinary.err = fmt.Errorf("go build ./cmd/pgq: %w\n%s", err, out)
		}
	})
	if pgqBinary.err != nil {
		t.Fatal(pgqBinary.err)
	}
	return pgqBinary.path
}

// startWeb runs `pgq web` on dsn until the test ends and returns its URL.
func startWeb(t *testing.T, dsn string, args ...string) string {
	t.Helper()
	bin := buildPgq(t)
	cmd := exec.Command(bin, append([]string{"web", "--dsn", dsn, "--addr", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), "PGQ_WEB_AUTH=")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("pgq web did not stop within 10 s of SIGINT")
		}
	})
	line := make(chan string, 1)
	go func() {
		r := bufio.NewReader(stdout)
		l, _ := r.ReadString('\n')
		line <- l
		_, _ = io.Copy(io.Discard, r)
	}()
	select {
	case l := <-line:
		m := regexp.MustCompile(`http://127\.0\.0\.1:\d+`).FindString(l)
		if m == "" {
			t.Fatalf("pgq web said %q\n%s", l, stderr.String())
		}
		return m
	case err := <-exited:
		t.Fatalf("pgq web exited: %v\n%s", err, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("pgq web did not start within 30 s")
	}
	return ""
}

// browser starts headless Chromium for the test, sending basic auth on
// every request; it skips the test when Chromium cannot run.
func browser(t *testing.T, user, pass string) context.Context {
	t.Helper()
	path := findChromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first action starts the browser, bound to the ctx it is given:
	// ctx itself, not a shorter one.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Skipf("browser tests skipped: %s cannot start: %v", path, err)
	}
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders,
		network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": "Basic " + auth}}); err != nil {
		t.Fatal(err)
	}
	return ctx
}

// shot saves a full-page screenshot as NAME.png in the test's artifact
// directory (kept with go test -artifacts).
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := t.ArtifactDir()
	if d := os.Getenv("PGQWEB_SCREENSHOTS"); d != "" {
		dir = d
		_ = os.MkdirAll(dir, 0o755)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// js evaluates a JavaScript expression in the page.
func js[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// open navigates to u and waits for the live stream to be connected (the
// page's script runs: the CSP lets it).
func open(t *testing.T, ctx context.Context, u string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(u)); err != nil {
		t.Fatalf("open %s: %v", u, err)
	}
	waitJS(t, ctx, 10*time.Second, `document.body.dataset.live === "on" || !document.getElementById("live")`, "the live stream of "+u)
}

// waitJS waits until a JavaScript predicate holds.
func waitJS(t *testing.T, ctx context.Context, within time.Duration, pred, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!!(`+pred+`)`))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v (%s; %v)", what, within, pred, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// submit clicks a submit button (accepting its confirmation) and waits
// for the next page.
func submit(t *testing.T, ctx context.Context, button string) {
	t.Helper()
	before := js[string](t, ctx, `location.href + "#" + performance.timeOrigin`)
	js[bool](t, ctx, `window.confirm = () => true; document.querySelector(`+quoteJS(button)+`).click(); true`)
	waitJS(t, ctx, 30*time.Second, `location.href + "#" + performance.timeOrigin !== `+quoteJS(before)+` && document.readyState === "complete"`,
		"the page after "+button)
}

func quoteJS(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

func countRows(t *testing.T, db *sql.DB, where string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM pgqueuer WHERE `+where, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestBrowser covers, in a real browser against `pgq web` with a live
// worker: the overview shows the database's counts; a filter narrows the
// list; a job's page shows its history; requeue of a held job and bulk
// cancel of a filter work and the database agrees; a job a worker finishes
// shows without a reload within 3 s; an action without the CSRF token is
// refused (403) and changes nothing; a payload with HTML shows as text.
// Each page is saved as a screenshot.
func TestBrowser(t *testing.T) {
	findChromium(t)
	db, dsn := pgqtest.NewDB(t, "pgx")
	ctx := testCtx(t)
	s := seed(t, ctx, db)
	q := pgq.NewQueries(db)
	// Activity for the chart: jobs finished by a worker, some failing.
	warm := make([]pgq.NewJob, 400)
	for i := range warm {
		warm[i] = pgq.NewJob{Entrypoint: "report", Payload: []byte{byte(i % 10)}}
	}
	if _, err := q.EnqueueBatch(ctx, warm); err != nil {
		t.Fatal(err)
	}
	qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
	release := make(chan struct{})
	if err := qm.Entrypoint("report", func(ctx context.Context, job *pgq.Job) error {
		if len(job.Payload) == 1 && job.Payload[0] == 7 {
			return errors.New("report template missing")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := qm.Entrypoint("live", func(ctx context.Context, job *pgq.Job) error {
		if err := pgq.ReportProgress(ctx, 0.4, "step 2 of 5"); err != nil {
			return err
		}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}); err != nil {
		t.Fatal(err)
	}
	wctx, stopWorker := context.WithCancel(ctx)
	workerDone := make(chan error, 1)
	go func() { workerDone <- qm.Run(wctx) }()
	defer func() {
		stopWorker()
		if err := <-workerDone; err != nil {
			t.Errorf("worker: %v", err)
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for countRows(t, db, `entrypoint = 'report'`) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the worker did not finish the report jobs within 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// An hour of history for the chart, as workers fold it into the
	// statistics table: a row every 5 s, a burst of errors 20 minutes ago.
	if _, err := db.ExecContext(ctx, `INSERT INTO pgqueuer_statistics (created, count, priority, status, entrypoint)
		SELECT date_trunc('sec', now() AT TIME ZONE 'UTC') - make_interval(secs => x), c, 0, st::pgqueuer_status, 'report'
		FROM generate_series(65, 3595, 5) AS x,
		LATERAL (VALUES ('successful', (50 + 25 * sin(x / 420.0) + (x % 7))::bigint),
		                ('exception', CASE WHEN x / 60 BETWEEN 19 AND 22 THEN 14 WHEN x % 35 = 0 THEN 1 ELSE 0 END)) AS v(st, c)
		WHERE c > 0`); err != nil {
		t.Fatal(err)
	}
	liveID, err := q.Enqueue(ctx, "live", []byte(`{"step": "waits for the test"}`))
	if err != nil {
		t.Fatal(err)
	}

	base := startWeb(t, dsn, "--allow-actions", "--auth", "ops:pw")
	b := browser(t, "ops", "pw")

	// The overview shows the counts the database holds.
	open(t, b, base+"/")
	waitJS(t, b, 10*time.Second, `document.querySelector('[data-count="live/picked"]')?.textContent === "1"`, "the running live job on the overview")
	for _, c := range []struct{ ep, status string }{{"mail", "queued"}, {"sms", "queued"}, {"mail", "failed"}, {"live", "picked"}} {
		want := countRows(t, db, `entrypoint = $1 AND status = $2`, c.ep, c.status)
		got := js[string](t, b, `document.querySelector('[data-count="`+c.ep+`/`+c.status+`"]')?.textContent ?? "none"`)
		if got != fmt.Sprint(want) {
			t.Errorf("overview: %s/%s shows %s, the database has %d", c.ep, c.status, got, want)
		}
	}
	if bars := js[int](t, b, `[...document.querySelectorAll("svg.chart rect.bar")].filter(r => +r.getAttribute("height") > 0).length`); bars < 59 {
		t.Errorf("the chart has %d bars, want one a minute over the hour", bars)
	}
	shot(t, b, "overview")

	// A filter narrows the list.
	open(t, b, base+"/jobs")
	all := js[int](t, b, `document.querySelectorAll("table.jobs tbody tr").length`)
	js[bool](t, b, `document.querySelector("input[name=entrypoint]").value = "sms"; document.querySelector("select[name=status]").value = "queued"; true`)
	submit(t, b, `form.filters button[type=submit]`)
	rows := js[[]string](t, b, `[...document.querySelectorAll("table.jobs tbody tr td:nth-child(3)")].map(td => td.textContent)`)
	smsQueued := countRows(t, db, `entrypoint = 'sms' AND status = 'queued'`)
	if len(rows) != min(50, smsQueued) || len(rows) >= all {
		t.Errorf("filter sms/queued: %d rows (of %d unfiltered), the database has %d", len(rows), all, smsQueued)
	}
	for _, ep := range rows {
		if ep != "sms" {
			t.Errorf("filter sms: a row of %q", ep)
		}
	}
	shot(t, b, "jobs-filtered")

	// A job's page shows its history (and the failure's traceback).
	open(t, b, base+"/jobs/"+itoa(s.held))
	items := js[int](t, b, `document.querySelectorAll("ol.timeline li").length`)
	if hist, _ := q.JobHistory(ctx, s.held); items != len(hist) || items < 2 {
		t.Errorf("job %d: %d history items, the log has %d", s.held, items, len(hist))
	}
	if tb := js[string](t, b, `document.querySelector("pre.trace")?.textContent ?? ""`); !strings.Contains(tb, "line 2") {
		t.Errorf("job %d: traceback %q", s.held, tb)
	}
	shot(t, b, "job-held")

	// A payload with HTML shows as text.
	open(t, b, base+"/jobs/"+itoa(s.html))
	if got := js[string](t, b, `document.getElementById("payload").textContent`); got != `<script>alert("x")</script><b>bold</b>` {
		t.Errorf("HTML payload shows as %q", got)
	}
	if n := js[int](t, b, `document.querySelectorAll("#payload *").length`); n != 0 {
		t.Errorf("the HTML payload made %d elements", n)
	}
	shot(t, b, "job-html-payload")

	// An action without the CSRF token is refused and changes nothing.
	open(t, b, base+"/held")
	shot(t, b, "held")
	heldBefore := countRows(t, db, `status = 'failed'`)
	js[bool](t, b, `document.querySelectorAll("input[name=csrf]").forEach(e => e.remove()); document.querySelector('input[name=id][value="`+itoa(s.held)+`"]').checked = true; true`)
	submit(t, b, `form#held button[formaction$="/actions/requeue"]`)
	if h1 := js[string](t, b, `document.querySelector("h1")?.textContent ?? ""`); !strings.HasPrefix(h1, "403") {
		t.Errorf("requeue without the CSRF token: page %q, want 403", h1)
	}
	if n := countRows(t, db, `status = 'failed'`); n != heldBefore {
		t.Errorf("requeue without the CSRF token: %d held, was %d", n, heldBefore)
	}
	shot(t, b, "refused-403")

	// Requeue of a held job works, and the database agrees.
	open(t, b, base+"/held")
	js[bool](t, b, `document.querySelector('input[name=id][value="`+itoa(s.held)+`"]').checked = true; true`)
	submit(t, b, `form#held button[formaction$="/actions/requeue"]`)
	if st := countRows(t, db, `id = $1 AND status = 'queued' AND attempts = 0`, int64(s.held)); st != 1 {
		t.Errorf("held job %d not queued again after requeue", s.held)
	}
	if p := js[string](t, b, `location.pathname`); p != "/held" {
		t.Errorf("after the requeue the browser is at %s, want back at /held", p)
	}

	// Bulk cancel of a filter: all matching, not only the page.
	open(t, b, base+"/jobs?entrypoint=mail&status=queued")
	mailQueued := countRows(t, db, `entrypoint = 'mail' AND status = 'queued'`)
	js[bool](t, b, `document.getElementById("all-matching").checked = true; true`)
	submit(t, b, `form#bulk button[formaction$="/actions/cancel"]`)
	waitJS(t, b, 30*time.Second, `document.getElementById("task-state")?.textContent.startsWith("Done")`, "the bulk cancel's end")
	if txt := js[string](t, b, `document.getElementById("task-state").textContent`); !strings.Contains(txt, "Done: "+fmt.Sprint(mailQueued)+" jobs") {
		t.Errorf("bulk cancel page says %q, want %d jobs", txt, mailQueued)
	}
	if n := countRows(t, db, `entrypoint = 'mail' AND status = 'queued'`); n != 0 || countRows(t, db, `entrypoint = 'sms' AND status = 'queued'`) != smsQueued {
		t.Errorf("after bulk cancel of queued mail: %d left; sms untouched: %v", n, countRows(t, db, `entrypoint = 'sms' AND status = 'queued'`) == smsQueued)
	}
	shot(t, b, "task-bulk-cancel")

	// A job a worker finishes shows without a reload within 3 s.
	open(t, b, base+"/jobs/"+itoa(liveID))
	waitJS(t, b, 5*time.Second, `document.querySelector("h1 .status")?.textContent === "running"`, "the live job running")
	// Its progress (pgq.ReportProgress) shows as a bar with its note.
	waitJS(t, b, 20*time.Second, `document.querySelector("#job-progress")?.value === 0.4`, "the live job's progress bar")
	if got := js[string](t, b, `document.querySelector("dd.progress").textContent.replace(/\s+/g, " ").trim()`); !strings.HasPrefix(got, "40% 40% step 2 of 5") {
		t.Errorf("the progress reads %q, want 40%% and its note", got)
	}
	shot(t, b, "job-running")
	origin := js[float64](t, b, `performance.timeOrigin`)
	close(release)
	finished := time.Now()
	waitJS(t, b, 3*time.Second, `document.querySelector("h1 .status")?.textContent === "successful"`, "the finished job, without a reload")
	t.Logf("job %d finished by the worker shows after %v", liveID, time.Since(finished).Round(time.Millisecond))
	if o := js[float64](t, b, `performance.timeOrigin`); o != origin {
		t.Error("the page was reloaded")
	}
	shot(t, b, "job-finished-live")

	// The other pages.
	if _, err := db.ExecContext(ctx, `INSERT INTO pgqueuer_schedules (expression, entrypoint, next_run, last_run)
		VALUES ('0 3 * * *', 'nightly-report', now() + interval '5 hours', now() - interval '19 hours'),
		       ('*/5 * * * *', 'cleanup', now() + interval '3 minutes', now() - interval '2 minutes')`); err != nil {
		t.Fatal(err)
	}
	open(t, b, base+"/schedules")
	shot(t, b, "schedules")
	open(t, b, base+"/events")
	waitJS(t, b, 10*time.Second, `document.querySelector("h1 small")?.textContent.startsWith("listening")`, "the events page listening")
	if _, err := q.Enqueue(ctx, "sms", []byte(`{"to":"eve"}`)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, b, 5*time.Second, `[...document.querySelectorAll("table.events tbody tr")].some(tr => tr.textContent.includes("operation=insert"))`,
		"the enqueue's event in the tail")
	shot(t, b, "events")
	open(t, b, base+"/jobs/987654321")
	shot(t, b, "not-found")
	open(t, b, base+"/")
	shot(t, b, "overview-after")
}
