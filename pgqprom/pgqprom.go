// Package pgqprom exports pgq's metrics to Prometheus: the state of a queue,
// read from the database on each scrape ([NewCollector]), what a worker's
// handlers do ([Middleware]), a worker's own state ([NewWorkerCollector]),
// and a readiness check ([ReadyHandler]).
//
// It is a module of its own so that pgq itself does not depend on the
// Prometheus client.
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(pgqprom.NewCollector(db))
//	qm := pgq.NewQueueManager(db, pgq.WithMiddleware(pgqprom.Middleware(reg)))
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//	http.Handle("/ready", pgqprom.ReadyHandler(db))
package pgqprom

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgq-dev/pgq"
)

// Namespace is the prefix of every metric name.
const Namespace = "pgq"

// ScrapeTimeout bounds the database reads of one scrape of a collector and
// of one readiness check.
const ScrapeTimeout = 5 * time.Second

// DurationBuckets are the buckets of the handler duration histogram, in
// seconds: from 5 ms to 10 minutes.
var DurationBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// collector reads a queue's state on each scrape.
type collector struct {
	q                                   *pgq.Queries
	up, duration, jobs, oldest, perSecs *prometheus.Desc
}

// NewCollector returns a collector of the queue on db (with the naming
// options WithPrefix and WithSchema, as given to pgq.NewQueries). Each
// scrape reads pgq's Stats, within ScrapeTimeout, and exports:
//
//	pgq_up                              1 if the scrape read the queue, else 0
//	pgq_scrape_duration_seconds         how long that took
//	pgq_queue_jobs{entrypoint,status}   jobs in the job table: queued, picked, failed
//	pgq_queue_oldest_wait_seconds{entrypoint}
//	                                    how long its queued job due the longest has waited
//	pgq_jobs_per_second                 jobs finished per second over the last minute,
//	                                    by every worker (pgq's and PGQueuer's)
//
// When the database cannot be read, the scrape still succeeds with pgq_up 0
// and without the queue's metrics.
func NewCollector(db *sql.DB, opts ...pgq.Option) prometheus.Collector {
	return &collector{
		q: pgq.NewQueries(db, opts...),
		up: prometheus.NewDesc(Namespace+"_up",
			"1 if the last scrape read the queue's state from the database, else 0.", nil, nil),
		duration: prometheus.NewDesc(Namespace+"_scrape_duration_seconds",
			"How long reading the queue's state took.", nil, nil),
		jobs: prometheus.NewDesc(Namespace+"_queue_jobs",
			"Jobs in the job table by entrypoint and status (queued, picked, failed).",
			[]string{"entrypoint", "status"}, nil),
		oldest: prometheus.NewDesc(Namespace+"_queue_oldest_wait_seconds",
			"How long the queued job of the entrypoint that has been due the longest has waited (0 if none is due).",
			[]string{"entrypoint"}, nil),
		perSecs: prometheus.NewDesc(Namespace+"_jobs_per_second",
			"Jobs that reached a terminal status per second over the last minute, by every worker.", nil, nil),
	}
}

// Describe sends the descriptors of every metric the collector exports.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.duration, c.jobs, c.oldest, c.perSecs} {
		ch <- d
	}
}

// Collect reads the queue's state and sends its metrics.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), ScrapeTimeout)
	defer cancel()
	start := time.Now()
	s, err := c.q.Stats(ctx, pgq.WithStatsErrors(0))
	ch <- prometheus.MustNewConstMetric(c.duration, prometheus.GaugeValue, time.Since(start).Seconds())
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)

	type key struct{ ep, status string }
	jobs := map[key]int64{}
	var order []key
	oldest := map[string]time.Duration{}
	var eps []string
	for _, d := range s.Queue {
		k := key{d.Entrypoint, string(d.Status)}
		if _, ok := jobs[k]; !ok {
			order = append(order, k)
		}
		jobs[k] += d.Count
		if d.Status == pgq.StatusQueued {
			if _, ok := oldest[d.Entrypoint]; !ok {
				eps = append(eps, d.Entrypoint)
			}
			oldest[d.Entrypoint] = max(oldest[d.Entrypoint], d.OldestWait)
		}
	}
	for _, k := range order {
		ch <- prometheus.MustNewConstMetric(c.jobs, prometheus.GaugeValue, float64(jobs[k]), k.ep, k.status)
	}
	for _, ep := range eps {
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, oldest[ep].Seconds(), ep)
	}
	ch <- prometheus.MustNewConstMetric(c.perSecs, prometheus.GaugeValue, s.JobsPerSecond)
}

// handlerMetrics are the metrics Middleware records.
type handlerMetrics struct {
	completed, failed *prometheus.CounterVec
	duration          *prometheus.HistogramVec
}

// Middleware returns a pgq.Middleware that counts what the handlers of a
// QueueManager do and registers its metrics with reg (nil means
// prometheus.DefaultRegisterer):
//
//	pgq_jobs_completed_total{entrypoint}   handlers that returned nil
//	pgq_jobs_failed_total{entrypoint}      handlers that returned an error or panicked
//	                                       (whether the job is then retried, held or
//	                                       recorded as an exception)
//	pgq_job_duration_seconds{entrypoint}   how long handlers ran (DurationBuckets)
//
// Several QueueManagers may share one reg: a second call reuses the metrics
// the first registered. It panics if reg refuses them for another reason,
// as prometheus.MustRegister does.
func Middleware(reg prometheus.Registerer) pgq.Middleware {
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	m := handlerMetrics{
		completed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "jobs_completed_total",
			Help: "Jobs whose handler returned nil, by entrypoint.",
		}, []string{"entrypoint"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "jobs_failed_total",
			Help: "Jobs whose handler returned an error or panicked, by entrypoint.",
		}, []string{"entrypoint"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "job_duration_seconds",
			Help:    "How long handlers ran, by entrypoint.",
			Buckets: DurationBuckets,
		}, []string{"entrypoint"}),
	}
	m.completed = register(reg, m.completed)
	m.failed = register(reg, m.failed)
	m.duration = register(reg, m.duration)

	return func(next pgq.Handler) pgq.Handler {
		return func(ctx context.Context, job *pgq.Job) (err error) {
			start := time.Now()
			returned := false
			defer func() {
				m.duration.WithLabelValues(job.Entrypoint).Observe(time.Since(start).Seconds())
				if returned && err == nil {
					m.completed.WithLabelValues(job.Entrypoint).Inc()
				} else {
					m.failed.WithLabelValues(job.Entrypoint).Inc() // an error, or a panic going by
				}
			}()
			err = next(ctx, job)
			returned = true
			return err
		}
	}
}

// register registers c with reg, or returns the collector already
// registered in its place.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	panic(fmt.Sprintf("pgqprom: registering the handler metrics: %v", err))
}

// ReadyHandler returns an http.Handler for readiness probes: it answers
// 200 "ok" when pgq's schema on db is complete (pgq.Verify, with opts such
// as pgq.WithPrefix), and 503 with the reason when it is not or the
// database cannot be reached within ScrapeTimeout.
func ReadyHandler(db *sql.DB, opts ...pgq.SchemaOption) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), ScrapeTimeout)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := pgq.Verify(ctx, db, opts...); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		fmt.Fprintln(w, "ok")
	})
}

// workerCollector reads a worker's own state on each scrape.
type workerCollector struct {
	qm                   *pgq.QueueManager
	abandoned, listening *prometheus.Desc
}

// NewWorkerCollector returns a collector of qm's own state, which is in
// the process, not the database:
//
//	pgq_worker_abandoned_handlers  handlers abandoned after their job's timeout
//	                               that have not returned yet: leaking goroutines
//	                               (pgq.WithTimeout, QueueManager.AbandonedHandlers)
//	pgq_worker_listening           1 while the worker wakes on notifications, else 0
//
// Both carry the label queue_manager_id.
func NewWorkerCollector(qm *pgq.QueueManager) prometheus.Collector {
	labels := prometheus.Labels{"queue_manager_id": qm.ID().String()}
	return &workerCollector{
		qm: qm,
		abandoned: prometheus.NewDesc(Namespace+"_worker_abandoned_handlers",
			"Handlers abandoned after their job's timeout that have not returned yet.", nil, labels),
		listening: prometheus.NewDesc(Namespace+"_worker_listening",
			"1 while the worker wakes on notifications, 0 while it polls or is not running.", nil, labels),
	}
}

func (c *workerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.abandoned
	ch <- c.listening
}

func (c *workerCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.abandoned, prometheus.GaugeValue, float64(c.qm.AbandonedHandlers()))
	listening := 0.0
	if c.qm.Listening() {
		listening = 1
	}
	ch <- prometheus.MustNewConstMetric(c.listening, prometheus.GaugeValue, listening)
}
