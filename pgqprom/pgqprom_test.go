package pgqprom_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqprom"
	"github.com/pgq-dev/pgq/pgqtest"
)

func TestMain(m *testing.M) { pgqtest.Main(m) }

// scrape fetches url and parses the metrics.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return mf
}

// value returns the value of the metric of family name whose labels are
// labels (name=value pairs); ok is false when there is none.
func value(mf map[string]*dto.MetricFamily, name string, labels ...string) (v float64, ok bool) {
	f := mf[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel())*2 != len(labels) {
			continue
		}
		for i, l := range m.GetLabel() {
			if l.GetName() != labels[2*i] || l.GetValue() != labels[2*i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	for _, driver := range pgqtest.Drivers() {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			db, _ := pgqtest.NewDB(t, driver)
			reg := prometheus.NewRegistry()
			reg.MustRegister(pgqprom.NewCollector(db))
			srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
			defer srv.Close()

			q := pgq.NewQueries(db)
			for _, ep := range []string{"ok", "ok", "ok", "bad", "later", "later"} {
				if _, err := q.Enqueue(ctx, ep, nil); err != nil {
					t.Fatal(err)
				}
			}
			// Two workers share the registry: the second reuses the metrics.
			for range 2 {
				qm := pgq.NewQueueManager(db, pgq.WithMiddleware(pgqprom.Middleware(reg)))
				_ = qm.Entrypoint("ok", func(context.Context, *pgq.Job) error { return nil })
				_ = qm.Entrypoint("bad", func(context.Context, *pgq.Job) error { return errors.New("no") })
				if err := qm.Run(ctx, pgq.WithMode(pgq.ModeDrain)); err != nil {
					t.Fatal(err)
				}
			}

			mf := scrape(t, srv.URL)
			for _, c := range []struct {
				name   string
				labels []string
				want   float64
			}{
				{"pgq_jobs_completed_total", []string{"entrypoint", "ok"}, 3},
				{"pgq_jobs_failed_total", []string{"entrypoint", "bad"}, 1},
				{"pgq_job_duration_seconds", []string{"entrypoint", "ok"}, 3},
				{"pgq_job_duration_seconds", []string{"entrypoint", "bad"}, 1},
				{"pgq_up", nil, 1},
				{"pgq_queue_jobs", []string{"entrypoint", "later", "status", "queued"}, 2},
			} {
				if got, ok := value(mf, c.name, c.labels...); !ok || got != c.want {
					t.Errorf("%s%v = %v (present: %v), want %v", c.name, c.labels, got, ok, c.want)
				}
			}
			for _, c := range []struct {
				name   string
				labels []string
			}{
				{"pgq_jobs_completed_total", []string{"entrypoint", "bad"}},
				{"pgq_jobs_failed_total", []string{"entrypoint", "ok"}},
				{"pgq_queue_jobs", []string{"entrypoint", "ok", "status", "queued"}},
			} {
				if got, ok := value(mf, c.name, c.labels...); ok {
					t.Errorf("%s%v = %v, want no such series", c.name, c.labels, got)
				}
			}
			// Four jobs finished within the last minute (61 s at most).
			if got, _ := value(mf, "pgq_jobs_per_second"); got < 4.0/61 || got > 4.0/60 {
				t.Errorf("pgq_jobs_per_second = %v, want 4 per minute", got)
			}
			if got, ok := value(mf, "pgq_queue_oldest_wait_seconds", "entrypoint", "later"); !ok || got < 0 || got > 60 {
				t.Errorf("pgq_queue_oldest_wait_seconds{later} = %v (%v)", got, ok)
			}
		})
	}
}

func TestMiddlewareCountsPanics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	h := pgqprom.Middleware(reg)(func(context.Context, *pgq.Job) error { panic("boom") })
	func() {
		defer func() {
			if recover() == nil {
				t.Error("the panic did not go through the middleware")
			}
		}()
		_ = h(context.Background(), &pgq.Job{Entrypoint: "p"})
	}()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.MetricFamily{}
	for _, f := range mfs {
		got[f.GetName()] = f
	}
	if v, ok := value(got, "pgq_jobs_failed_total", "entrypoint", "p"); !ok || v != 1 {
		t.Errorf("failed after a panic = %v (%v)", v, ok)
	}
}

func TestCollectorWithoutSchema(t *testing.T) {
	t.Parallel()
	db, _ := pgqtest.NewDB(t, "pgx", pgqtest.Bare())
	reg := prometheus.NewRegistry()
	reg.MustRegister(pgqprom.NewCollector(db))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	mf := scrape(t, srv.URL)
	if v, ok := value(mf, "pgq_up"); !ok || v != 0 {
		t.Errorf("pgq_up = %v (%v), want 0", v, ok)
	}
	if _, ok := mf["pgq_queue_jobs"]; ok {
		t.Error("queue metrics without a queue")
	}
}

func TestReadyHandler(t *testing.T) {
	t.Parallel()
	ready, _ := pgqtest.NewDB(t, "pgx")
	bare, _ := pgqtest.NewDB(t, "postgres", pgqtest.Bare())
	for _, c := range []struct {
		name string
		h    http.Handler
		code int
		body string
	}{
		{"installed", pgqprom.ReadyHandler(ready), http.StatusOK, "ok\n"},
		{"other prefix", pgqprom.ReadyHandler(ready, pgq.WithPrefix("app_")), http.StatusServiceUnavailable, "not ready: "},
		{"no schema", pgqprom.ReadyHandler(bare), http.StatusServiceUnavailable, "not ready: "},
	} {
		rec := httptest.NewRecorder()
		c.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ready", nil))
		if rec.Code != c.code || !strings.HasPrefix(rec.Body.String(), c.body) {
			t.Errorf("%s: %d %q, want %d %q…", c.name, rec.Code, rec.Body.String(), c.code, c.body)
		}
	}
}

// A worker whose handler ignores its job's timeout shows one abandoned
// handler until the handler returns, and shows that it listens.
func TestWorkerCollector(t *testing.T) {
	db, dsn := pgqtest.NewDB(t, "pgx")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
	release := make(chan struct{})
	if err := qm.Entrypoint("stuck", func(context.Context, *pgq.Job) error { <-release; return nil },
		pgq.WithTimeout(100*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(pgqprom.NewWorkerCollector(qm))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	id := qm.ID().String()
	if v, ok := value(scrape(t, srv.URL), "pgq_worker_listening", "queue_manager_id", id); !ok || v != 0 {
		t.Errorf("listening before Run: %v %v, want 0", v, ok)
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- qm.Run(runCtx) }()
	defer func() { stop(); <-done }()
	if _, err := pgq.NewQueries(db).Enqueue(ctx, "stuck", nil); err != nil {
		t.Fatal(err)
	}
	await := func(name string, want float64) {
		t.Helper()
		for {
			if v, _ := value(scrape(t, srv.URL), name, "queue_manager_id", id); v == want {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s never reached %v", name, want)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	await("pgq_worker_listening", 1)
	await("pgq_worker_abandoned_handlers", 1)
	close(release)
	await("pgq_worker_abandoned_handlers", 0)
}
