package bench

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/lib/pq"

	"github.com/pgq-dev/pgq/internal/notifier"
)

// Settings are the conditions a result was measured under: the workload
// (fields that do not apply to a benchmark are zero and left out of JSON),
// the client and the server.
type Settings struct {
	Jobs         int `json:"jobs,omitempty"`
	EnqueueBatch int `json:"enqueue_batch,omitempty"`
	Workers      int `json:"workers,omitempty"`
	Processes    int `json:"processes,omitempty"` // worker OS processes, each with Workers QueueManagers; 0: in this one
	// WorkerGOMAXPROCS is each worker process's GOMAXPROCS (-1: Go's default).
	WorkerGOMAXPROCS int     `json:"worker_gomaxprocs,omitempty"`
	Producers        int     `json:"producers,omitempty"`
	Rate             float64 `json:"rate,omitempty"` // jobs enqueued per second, all producers together; 0: unpaced
	BatchSize        int     `json:"batch_size,omitempty"`
	Concurrency      int     `json:"concurrency,omitempty"`
	Duration         string  `json:"duration,omitempty"`
	Warmup           string  `json:"warmup,omitempty"` // run unmeasured before Duration
	ReportEvery      string  `json:"report_every,omitempty"`
	// LogRetention and StatsInterval are the workers' WithLogRetention
	// and WithStatisticsInterval, when set.
	LogRetention  string `json:"log_retention,omitempty"`
	StatsInterval string `json:"stats_interval,omitempty"`
	Samples       int    `json:"samples,omitempty"`
	Interval      string `json:"interval,omitempty"` // pause between latency samples
	LogRows       int64  `json:"log_rows,omitempty"`
	LookupIDs     int    `json:"lookup_ids,omitempty"`
	Repeats       int    `json:"repeats,omitempty"`
	Analyze       bool   `json:"analyze,omitempty"` // ANALYZE of the job table before processing
	Vacuum        bool   `json:"vacuum,omitempty"`  // VACUUM of the job table before enqueuing
	SyncClaims    bool   `json:"sync_claims"`       // claims wait for their commit to reach disk
	SyncOutcomes  bool   `json:"sync_outcomes"`     // outcome writes wait for their commit to reach disk
	// ConcurrencyTuning says whether workers may run fewer handlers than
	// Concurrency while they saturate the database (WithConcurrencyTuning).
	ConcurrencyTuning bool   `json:"concurrency_tuning"`
	Handler           string `json:"handler,omitempty"` // what each job's handler does: "noop" or "sql"
	HandlerTime       string `json:"handler_time,omitempty"`
	HandlerWait       string `json:"handler_wait,omitempty"` // how the handler waits HandlerTime: "sleep" or "io"
	// MaxIdleConns is the pool's SetMaxIdleConns (database/sql's default
	// is 2); set by Main.
	MaxIdleConns int `json:"max_idle_conns,omitempty"`

	Driver string `json:"driver"` // "pgx" or "postgres" (lib/pq)
	// Listener is how workers and watchers get notifications: "open" (a
	// connection of their own to the DSN of a pool made by pgq.Open, as the
	// quick start does with lib/pq), "pool" (a borrowed pgx connection),
	// "dsn" (pgq.WithListenDSN) or "none" (polling).
	Listener string `json:"listener"`

	Durability        string `json:"durability"` // of the job and log tables, as found
	ServerVersion     string `json:"server_version"`
	Fsync             string `json:"fsync"`
	SynchronousCommit string `json:"synchronous_commit"`
	FullPageWrites    string `json:"full_page_writes"`
	SharedBuffers     string `json:"shared_buffers"`
	Server            string `json:"server,omitempty"` // "throwaway" or "dsn"; set by Main

	LoadAvg    string `json:"load_avg,omitempty"` // the machine's 1, 5 and 15 minute load at the start
	GoVersion  string `json:"go_version"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	NumCPU     int    `json:"num_cpu"`
}

func (s *Settings) setHandler(h HandlerConfig) {
	s.Handler = h.Kind
	s.HandlerTime = optionalDuration(h.Time)
	if h.Time > 0 {
		s.HandlerWait = h.Wait
	}
}

// driverName names db's driver as sql.Open does.
func driverName(db *sql.DB) string {
	switch notifier.Driver(db).(type) {
	case *pq.Driver:
		return "postgres"
	case *stdlib.Driver:
		return "pgx"
	}
	return fmt.Sprintf("%T", notifier.Driver(db))
}

// listenerKind says how a QueueManager or CompletionWatcher on db with
// listenDSN gets notifications (see pgq.WithListenDSN).
func listenerKind(db *sql.DB, listenDSN string) string {
	_, opened := db.Driver().(interface{ Unwrap() driver.Driver })
	switch {
	case listenDSN != "":
		return "dsn"
	case opened:
		return "open"
	case driverName(db) == "pgx":
		return "pool"
	}
	return "none"
}

// readSettings fills the client and server parts of Settings.
func readSettings(ctx context.Context, db *sql.DB, listenDSN string) (Settings, error) {
	s := Settings{
		LoadAvg:    loadAvg(),
		Driver:     driverName(db),
		Listener:   listenerKind(db, listenDSN),
		GoVersion:  runtime.Version(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		NumCPU:     runtime.NumCPU(),
	}
	err := db.QueryRowContext(ctx, sqlServerInfo).Scan(
		&s.ServerVersion, &s.Fsync, &s.SynchronousCommit, &s.FullPageWrites, &s.SharedBuffers)
	if err != nil {
		return s, fmt.Errorf("reading server settings: %w", err)
	}
	var job, log string
	if err := db.QueryRowContext(ctx, sqlPersistence).Scan(&job, &log); err != nil {
		return s, fmt.Errorf("reading table durability: %w", err)
	}
	s.Durability = durabilityName(job, log)
	return s, nil
}

// durabilityName names the durability mode that the job and log tables'
// relpersistence ('p' logged, 'u' unlogged) amount to.
func durabilityName(job, log string) string {
	switch {
	case job == "p" && log == "p":
		return "durable"
	case job == "p" && log == "u":
		return "balanced"
	case job == "u" && log == "u":
		return "volatile"
	case job == "" || log == "":
		return "not installed"
	}
	return fmt.Sprintf("job table %q, log table %q", job, log)
}

// loadAvg returns the first three fields of /proc/loadavg, or "".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// optionalDuration renders a setting that is off at 0: "" then (left out
// of the JSON), d.String() otherwise.
func optionalDuration(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return d.String()
}
