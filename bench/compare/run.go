package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgq-dev/pgq/internal/pgcluster"
)

// sampleEvery is how often the CPU of River's and PGQueuer's processes and
// of the server is read from /proc.
const sampleEvery = 100 * time.Millisecond

// figures is one run's result. CPU per job is -1 when unknown.
type figures struct {
	rate               float64 // jobs/s
	clientUs, serverUs float64 // CPU per job
	rss                int64   // the client process's peak RSS, bytes
	p50, p99           float64 // enqueue → start, ms (paced throughput only)
	offered            float64 // the paced run's enqueue rate
}

// system is one row of the table: something run once a round.
type system struct {
	name string
	// run measures on a fresh database; prev holds this round's figures
	// so far, by system name.
	run func(ctx context.Context, h *harness, db string, prev map[string]figures) (figures, error)
}

// harness is the server and what the runs share.
type harness struct {
	cfg        *config
	cluster    *pgcluster.Cluster
	admin      *pgx.Conn
	postmaster int
	stderr     io.Writer
	seq        int
}

func run(ctx context.Context, cfg *config, stdout, stderr io.Writer) error {
	h := &harness{cfg: cfg, stderr: stderr}
	drains, tputs := h.systems()
	if cfg.pgqueuerEnv == "" {
		fmt.Fprintln(stdout, "PGQueuer skipped: no PGQueuer environment (make pgqueuer-env sets it up from ../shared/pgqueuer; pass -pgqueuer-env)")
	} else if _, err := os.Stat(cfg.pgqueuerEnv); err != nil {
		fmt.Fprintf(stdout, "PGQueuer skipped: %v\n", err)
	} else {
		drains = append(drains, system{name: "PGQueuer 1.3.2 benchmark.py drain (apg, 5 dequeuers, batch 100)", run: runPGQueuer})
	}

	var log io.Writer
	if cfg.verbose {
		log = stderr
	}
	fmt.Fprintln(stderr, "compare: starting a throwaway PostgreSQL (stock settings, jit = off)")
	c, err := pgcluster.Start(ctx, pgcluster.Options{Log: log, Install: true, Settings: map[string]string{"jit": "off"}})
	if err != nil {
		return err
	}
	h.cluster = c
	defer func() {
		if err := c.Stop(); err != nil {
			fmt.Fprintf(stderr, "compare: stopping the server: %v\n", err)
		}
	}()
	if h.admin, err = pgx.Connect(ctx, c.DSN("postgres")); err != nil {
		return err
	}
	defer h.admin.Close(context.WithoutCancel(ctx))
	var backend int
	if err := h.admin.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		return err
	}
	if st, ok := readStat(backend); ok {
		h.postmaster = st.ppid
	}
	var version string
	if err := h.admin.QueryRow(ctx, "SHOW server_version").Scan(&version); err != nil {
		return err
	}

	t := newTable(drains, tputs, cfg.rounds)
	for r := range cfg.rounds {
		prev := map[string]figures{}
		order := rotate(drains, r)
		torder := tputs
		if r%2 == 1 && len(tputs) >= 2 { // River's and pgq's unpaced runs swap; the paced run stays last
			torder = append([]system{tputs[1], tputs[0]}, tputs[2:]...)
		}
		for _, s := range append(order, torder...) {
			f, err := h.measure(ctx, s, prev)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, s.name, err)
			}
			prev[s.name] = f
			t.set(s.name, r, f)
			fmt.Fprintf(stderr, "compare: round %d/%d %-62.62s %9.0f jobs/s\n", r+1, cfg.rounds, s.name, f.rate)
		}
	}
	fmt.Fprintf(stdout, "\nPostgreSQL %s (stock settings, jit = off), %d cores; %d rounds; drains of %d jobs; throughput runs of %v\n",
		version, numCPU(), cfg.rounds, cfg.jobs, cfg.duration)
	return t.print(stdout, cfg)
}

// rotate returns s starting at element r mod len(s).
func rotate(s []system, r int) []system {
	if len(s) == 0 {
		return nil
	}
	k := r % len(s)
	return append(append([]system{}, s[k:]...), s[:k]...)
}

// measure runs s on a fresh database, after a CHECKPOINT and once no
// autovacuum worker is busy, and drops the database afterwards.
func (h *harness) measure(ctx context.Context, s system, prev map[string]figures) (figures, error) {
	h.seq++
	db := fmt.Sprintf("compare_%d", h.seq)
	if _, err := h.admin.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		return figures{}, err
	}
	defer func() {
		_, _ = h.admin.Exec(context.WithoutCancel(ctx), "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
	}()
	if err := h.quiet(ctx); err != nil {
		return figures{}, err
	}
	return s.run(ctx, h, db, prev)
}

// quiet waits (up to a minute) until no autovacuum worker runs, then
// checkpoints.
func (h *harness) quiet(ctx context.Context) error {
	for range 600 {
		var n int
		if err := h.admin.QueryRow(ctx,
			"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'").Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	_, err := h.admin.Exec(ctx, "CHECKPOINT")
	return err
}

// systems are the River and pgq rows: drains, then the throughput runs
// (River's, pgq's unpaced, pgq's paced).
func (h *harness) systems() (drains, tputs []system) {
	drains = append(drains, system{name: riverDrainName, run: runRiverDrain})
	for _, args := range h.cfg.pgqDrains {
		name := "pgq bench drain " + args
		if args == "" {
			name = pgqDefaultsName
		}
		fields := strings.Fields(args)
		drains = append(drains, system{name: name, run: func(ctx context.Context, h *harness, db string, _ map[string]figures) (figures, error) {
			return h.pgqDrain(ctx, db, fields)
		}})
	}
	tputs = []system{
		{name: riverDurationName, run: runRiverDuration},
		{name: pgqMaxName, run: func(ctx context.Context, h *harness, db string, _ map[string]figures) (figures, error) {
			return h.pgqThroughput(ctx, db, 0)
		}},
		{name: pgqPacedName(h.cfg.load), run: func(ctx context.Context, h *harness, db string, prev map[string]figures) (figures, error) {
			most, ok := prev[pgqMaxName]
			if !ok || most.rate <= 0 {
				return figures{}, errors.New("no unpaced pgq throughput in this round to pace from")
			}
			return h.pgqThroughput(ctx, db, h.cfg.load*most.rate)
		}},
	}
	return drains, tputs
}

const (
	riverDrainName    = "River v0.51.2 bench -n (2,000 workers)"
	riverDurationName = "River v0.51.2 bench --duration (2,000 workers)"
	pgqDefaultsName   = "pgq bench drain (defaults: batch 100, 100 at once)"
	pgqMaxName        = "pgq bench throughput (defaults, unpaced)"
)

func pgqPacedName(load float64) string {
	return fmt.Sprintf("pgq bench throughput at %.0f%% of unpaced", load*100)
}

// child runs cmd, sampling its CPU and the server's; mark, when not nil,
// is polled at each sample (see sampler). It returns the sampler, the
// child's stdout and its peak RSS.
func (h *harness) child(cmd *exec.Cmd, mark func() bool) (*sampler, []byte, int64, error) {
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		return nil, nil, 0, err
	}
	s := startSampler(cmd.Process.Pid, h.postmaster, sampleEvery, mark)
	err := cmd.Wait()
	s.finish()
	if err != nil {
		return s, out.Bytes(), 0, fmt.Errorf("%s: %w: %s", filepath.Base(cmd.Path), err, lastLines(errb.String(), 5))
	}
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss * 1024
	}
	return s, out.Bytes(), rss, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

func runRiverDrain(ctx context.Context, h *harness, db string, _ map[string]figures) (figures, error) {
	return h.river(ctx, db, h.cfg.jobs, 0)
}

func runRiverDuration(ctx context.Context, h *harness, db string, _ map[string]figures) (figures, error) {
	return h.river(ctx, db, 0, h.cfg.duration)
}

// river runs River's benchmark in a child process (this program again).
func (h *harness) river(ctx context.Context, db string, jobs int, d time.Duration) (figures, error) {
	exe, err := os.Executable()
	if err != nil {
		return figures{}, err
	}
	cmd := exec.CommandContext(ctx, exe, "river-child", h.url(db), strconv.Itoa(jobs), d.String())
	s, out, rss, err := h.child(cmd, nil)
	if err != nil {
		return figures{}, err
	}
	var r riverResult
	if err := json.Unmarshal(out, &r); err != nil {
		return figures{}, fmt.Errorf("river's result %q: %w", out, err)
	}
	f := figures{rate: r.Rate, rss: rss, clientUs: -1, serverUs: -1}
	if r.Worked > 0 {
		_, server := s.within(time.Unix(0, r.StartNs), time.Unix(0, r.EndNs))
		f.clientUs, f.serverUs = perJob(time.Duration(r.ClientCPUNs), r.Worked), perJob(server, r.Worked)
	}
	return f, nil
}

func perJob(d time.Duration, jobs int64) float64 {
	return float64(d.Microseconds()) / float64(jobs)
}

// pgqDrain runs `pgq bench drain` with args.
func (h *harness) pgqDrain(ctx context.Context, db string, args []string) (figures, error) {
	cmd := exec.CommandContext(ctx, h.cfg.pgq, append([]string{"bench", "drain", "--json",
		"--dsn", h.cluster.DSN(db), "--jobs", strconv.Itoa(h.cfg.jobs)}, args...)...)
	_, out, rss, err := h.child(cmd, nil)
	if err != nil {
		return figures{}, err
	}
	var r struct {
		Rate     float64 `json:"process_jobs_per_sec"`
		ClientUs float64 `json:"process_client_cpu_us_per_job"`
		ServerUs float64 `json:"process_server_cpu_us_per_job"`
		Readable bool    `json:"server_cpu_readable"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return figures{}, fmt.Errorf("pgq's result %q: %w", out, err)
	}
	f := figures{rate: r.Rate, clientUs: r.ClientUs, serverUs: r.ServerUs, rss: rss}
	if !r.Readable {
		f.serverUs = -1
	}
	return f, nil
}

// pgqThroughput runs `pgq bench throughput` at the library's defaults,
// unpaced (rate 0) or paced at rate with -latency-args.
func (h *harness) pgqThroughput(ctx context.Context, db string, rate float64) (figures, error) {
	args := []string{"bench", "throughput", "--json", "--dsn", h.cluster.DSN(db), "--duration", h.cfg.duration.String()}
	if rate > 0 {
		args = append(args, "--rate", strconv.FormatFloat(rate, 'f', 0, 64))
		args = append(args, strings.Fields(h.cfg.latencyArgs)...)
	}
	_, out, rss, err := h.child(exec.CommandContext(ctx, h.cfg.pgq, args...), nil)
	if err != nil {
		return figures{}, err
	}
	var r struct {
		Worked   float64 `json:"worked_jobs_per_sec"`
		Enqueued float64 `json:"enqueued_jobs_per_sec"`
		Start    struct {
			P50 float64 `json:"p50_ms"`
			P99 float64 `json:"p99_ms"`
		} `json:"enqueue_to_start"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return figures{}, fmt.Errorf("pgq's result %q: %w", out, err)
	}
	return figures{rate: r.Worked, offered: r.Enqueued, p50: r.Start.P50, p99: r.Start.P99,
		rss: rss, clientUs: -1, serverUs: -1}, nil
}

// url is the URI form of db's DSN, which asyncpg needs and pgx takes.
func (h *harness) url(db string) string {
	cfg, err := pgconn.ParseConfig(h.cluster.DSN(db))
	if err != nil {
		return h.cluster.DSN(db)
	}
	q := url.Values{"host": {cfg.Host}, "port": {strconv.Itoa(int(cfg.Port))}, "sslmode": {"disable"}}
	return (&url.URL{Scheme: "postgresql", User: url.User(cfg.User), Path: "/" + db, RawQuery: q.Encode()}).String()
}

// runPGQueuer installs PGQueuer's schema with its CLI and runs its
// tools/benchmark.py drain. Its CPU is read over the last `elapsed`
// seconds before its result file appeared (the drain phase).
func runPGQueuer(ctx context.Context, h *harness, db string, _ map[string]figures) (figures, error) {
	cfg, err := pgconn.ParseConfig(h.cluster.DSN(db))
	if err != nil {
		return figures{}, err
	}
	py := func(script string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, "sh", "-c", ". \"$PGQUEUER_ENV\" && "+script)
		cmd.Env = append(os.Environ(), "PGQUEUER_ENV="+h.cfg.pgqueuerEnv, "PGHOST="+cfg.Host,
			"PGPORT="+strconv.Itoa(int(cfg.Port)), "PGUSER="+cfg.User, "PGDATABASE="+db, "PGDSN="+h.url(db))
		return cmd
	}
	if _, _, _, err := h.child(py(`exec "$PY" -m pgqueuer --pg-dsn "$PGDSN" install --durability durable`), nil); err != nil {
		return figures{}, fmt.Errorf("pgqueuer install: %w", err)
	}
	dir, err := os.MkdirTemp("", "compare-pgqueuer")
	if err != nil {
		return figures{}, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "result.json")
	cmd := py(`exec "$PY" "$PGQ_SRC/tools/benchmark.py" -d apg -s drain --jobs ` + strconv.Itoa(h.cfg.jobs) +
		` --dequeue 5 --dequeue-batch-size 100 --output-json "$OUT"`)
	cmd.Env = append(cmd.Env, "OUT="+out)
	s, _, rss, err := h.child(cmd, func() bool { _, err := os.Stat(out); return err == nil })
	if err != nil {
		return figures{}, fmt.Errorf("pgqueuer benchmark: %w", err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return figures{}, err
	}
	var r struct {
		Elapsed string  `json:"elapsed"` // ISO 8601 duration, e.g. PT23.5S
		Rate    float64 `json:"rate"`
		Steps   int64   `json:"steps"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return figures{}, fmt.Errorf("pgqueuer's result %q: %w", b, err)
	}
	f := figures{rate: r.Rate, rss: rss, clientUs: -1, serverUs: -1}
	if el, err := isoSeconds(r.Elapsed); err == nil && !s.marked.IsZero() && r.Steps > 0 {
		client, server := s.within(s.marked.Add(-el), s.marked)
		f.clientUs, f.serverUs = perJob(client, r.Steps), perJob(server, r.Steps)
	}
	return f, nil
}

// isoSeconds parses pydantic's ISO 8601 rendering of a timedelta
// (PT23.456S, PT1M2.5S, PT1H0M0S).
func isoSeconds(s string) (time.Duration, error) {
	rest, ok := strings.CutPrefix(s, "PT")
	if !ok {
		return 0, fmt.Errorf("duration %q: want PT...", s)
	}
	var total time.Duration
	for rest != "" {
		i := strings.IndexAny(rest, "HMS")
		if i < 1 {
			return 0, fmt.Errorf("duration %q: bad part %q", s, rest)
		}
		v, err := strconv.ParseFloat(rest[:i], 64)
		if err != nil {
			return 0, fmt.Errorf("duration %q: %w", s, err)
		}
		unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second}[rest[i]]
		total += time.Duration(v * float64(unit))
		rest = rest[i+1:]
	}
	return total, nil
}
