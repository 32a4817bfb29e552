// Package pgqweb is pgq's web dashboard as an http.Handler: the queue's
// depth by entrypoint and status, jobs per second and errors over the last
// hour, the workers, the jobs (filtered, paginated, one by one with their
// history), held jobs, schedules and a live tail of the queue's events,
// updated in the browser without reloading. `pgq web` serves it; mount it
// in your own server (under a path prefix, behind your own auth) with
//
//	mux.Handle("/queue/", http.StripPrefix("/queue", pgqweb.Handler(db)))
//
// It is read-only unless WithActions is given: then operators may cancel,
// delete and requeue jobs, one by one or all those a filter matches (run
// in batches on the server, see pgq.Queries.CancelJobs). Every action
// needs the page's CSRF token and a same-origin request; WithBasicAuth
// guards every page.
//
// All pages, scripts and styles are in the binary (embed); the pages load
// nothing from elsewhere and run under a strict Content-Security-Policy
// (no inline script or style).
//
// Live updates cost the database little: one process keeps one LISTEN
// connection on the queue's channel while at least one page is open, and
// re-reads what open pages show at most once a second after the queue
// changed (every 15 s when idle; every 2 s while it cannot listen). Tabs
// showing the same page share each read.
package pgqweb

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"embed"
	"encoding/base64"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/pgq-dev/pgq"
)

// Option configures Handler: WithPrefix, WithSchema, WithListenDSN,
// WithActions, WithBasicAuth, WithLogger, WithContext.
type Option interface{ apply(*config) }

type option func(*config)

func (o option) apply(c *config) { o(c) }

type config struct {
	ctx        context.Context
	prefix     string
	schema     string
	listenDSN  string
	actions    bool
	user, pass string
	logger     *slog.Logger
}

// WithPrefix sets the deployment's table prefix (PGQueuer's
// PGQUEUER_PREFIX), as pgq.WithPrefix.
func WithPrefix(p string) Option { return option(func(c *config) { c.prefix = p }) }

// WithSchema sets the schema of pgq's tables, as pgq.WithSchema.
func WithSchema(s string) Option { return option(func(c *config) { c.schema = s }) }

// WithListenDSN gives the DSN of the connection that listens for the
// queue's events (see pgq.WithListenDSN); needed for a lib/pq pool opened
// with sql.Open. Without a listener the pages refresh every 2 s.
func WithListenDSN(dsn string) Option { return option(func(c *config) { c.listenDSN = dsn }) }

// WithActions lets operators cancel, delete and requeue jobs. Without it
// the dashboard is read-only and refuses every action with 403.
func WithActions() Option { return option(func(c *config) { c.actions = true }) }

// WithBasicAuth requires HTTP basic auth with this user and password on
// every page and action.
func WithBasicAuth(user, password string) Option {
	return option(func(c *config) { c.user, c.pass = user, password })
}

// WithLogger sets where the dashboard logs (its listener's reconnections,
// failed actions); the default is slog.Default().
func WithLogger(l *slog.Logger) Option { return option(func(c *config) { c.logger = l }) }

// WithContext bounds the dashboard's background work: its listener and
// the bulk actions it runs stop when ctx ends. The default is
// context.Background().
func WithContext(ctx context.Context) Option { return option(func(c *config) { c.ctx = ctx }) }

//go:embed assets templates
var files embed.FS

// assetVersion is a short hash of the embedded assets, added to their URLs
// so that browsers fetch them again after an upgrade.
var assetVersion = func() string {
	h := sha256.New()
	_ = fs.WalkDir(files, "assets", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := files.ReadFile(path)
			h.Write(b)
		}
		return nil
	})
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))[:10]
}()

// contentSecurityPolicy allows the dashboard's own scripts, styles and
// live stream, and nothing else.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// server is the dashboard behind Handler.
type server struct {
	cfg   config
	db    *sql.DB
	q     *pgq.Queries
	opts  []pgq.Option
	hub   *hub
	tasks *tasks
	csrf  string // this process's CSRF token
	mux   *http.ServeMux
	views *views
}

// Handler returns the dashboard on db. Its pages are at its root ("/",
// "/jobs", "/jobs/{id}", "/held", "/schedules", "/events"): mount it under
// a prefix with http.StripPrefix, it finds the prefix itself. Options
// that are invalid (a bad prefix or schema) show on every page.
func Handler(db *sql.DB, opts ...Option) http.Handler {
	c := config{ctx: context.Background(), logger: slog.Default()}
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	var qopts []pgq.Option
	var wopts []pgq.WatcherOption
	if c.prefix != "" {
		qopts = append(qopts, pgq.WithPrefix(c.prefix))
		wopts = append(wopts, pgq.WithPrefix(c.prefix))
	}
	if c.schema != "" {
		qopts = append(qopts, pgq.WithSchema(c.schema))
		wopts = append(wopts, pgq.WithSchema(c.schema))
	}
	if c.listenDSN != "" {
		wopts = append(wopts, pgq.WithListenDSN(c.listenDSN))
	}
	wopts = append(wopts, pgq.WithLogger(c.logger))
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("pgqweb csrf"))
	s := &server{
		cfg:   c,
		db:    db,
		q:     pgq.NewQueries(db, qopts...),
		opts:  qopts,
		csrf:  base64.RawURLEncoding.EncodeToString(mac.Sum(nil)),
		tasks: newTasks(),
	}
	s.hub = newHub(c.ctx, db, wopts, c.logger)
	s.views = newViews(s)
	s.routes()
	return s
}

func (s *server) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", s.page("overview"))
	m.HandleFunc("GET /jobs", s.page("jobs"))
	m.HandleFunc("GET /jobs/{id}", s.page("job"))
	m.HandleFunc("GET /held", s.page("held"))
	m.HandleFunc("GET /schedules", s.page("schedules"))
	m.HandleFunc("GET /events", s.page("events"))
	m.HandleFunc("GET /tasks/{id}", s.page("task"))
	m.HandleFunc("GET /live", s.live)
	m.HandleFunc("POST /actions/{action}", s.action)
	static, _ := fs.Sub(files, "assets")
	fileServer := http.FileServerFS(static)
	m.Handle("GET /static/", http.StripPrefix("/static", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=86400")
		fileServer.ServeHTTP(w, r)
	})))
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.renderError(w, r, http.StatusNotFound, "No such page: "+r.URL.Path)
	})
	s.mux = m
}

// crossOrigin refuses state-changing requests from other origins (by the
// browser's Sec-Fetch-Site and Origin headers).
var crossOrigin = http.NewCrossOriginProtection()

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	if s.cfg.user != "" || s.cfg.pass != "" {
		u, p, ok := r.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(s.cfg.user)) != 1 ||
			subtle.ConstantTimeCompare([]byte(p), []byte(s.cfg.pass)) != 1 {
			h.Set("WWW-Authenticate", `Basic realm="pgq", charset="UTF-8"`)
			http.Error(w, "401 unauthorized", http.StatusUnauthorized)
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

// base returns the path the handler is mounted under ("" at the root):
// what http.StripPrefix took off the request's path.
func base(r *http.Request) string {
	orig := r.RequestURI
	if i := strings.IndexByte(orig, '?'); i >= 0 {
		orig = orig[:i]
	}
	if u, err := url.PathUnescape(orig); err == nil {
		orig = u
	}
	if strings.HasSuffix(orig, r.URL.Path) {
		return strings.TrimSuffix(orig[:len(orig)-len(r.URL.Path)], "/")
	}
	return ""
}

// validCSRF reports whether the form carries this process's token.
func (s *server) validCSRF(r *http.Request) bool {
	return subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(s.csrf)) == 1
}

// fmtDuration shows a duration to people: "850ms", "3.2s", "4m05s",
// "2h05m", "3d04h".
func fmtDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd%02dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}
