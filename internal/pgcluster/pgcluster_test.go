package pgcluster_test

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "github.com/lib/pq"

	"go.uber.org/goleak"

	"github.com/pgq-dev/pgq/internal/pgcluster"
	"github.com/pgq-dev/pgq/internal/syncbuf"
)

func queryOne(t *testing.T, driver, dsn, query string) string {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatalf("%s: open: %v", driver, err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var s string
	if err := db.QueryRowContext(ctx, query).Scan(&s); err != nil {
		t.Fatalf("%s: %s: %v", driver, query, err)
	}
	return s
}

func TestCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	var log syncbuf.Buffer
	begin := time.Now()
	c, err := pgcluster.Start(ctx, pgcluster.Options{
		Settings: map[string]string{"fsync": "off", "application_name": "it's a test"},
		Log:      &log,
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("started in %s on port %d:\n%s", time.Since(begin).Round(time.Millisecond), c.Port(), log.String())
	t.Cleanup(func() { _ = c.Stop() })

	dsn := c.DSN("postgres")
	if !strings.Contains(dsn, "sslmode=disable") || !strings.Contains(dsn, "dbname=postgres") {
		t.Errorf("DSN(postgres) = %q", dsn)
	}
	for _, driver := range []string{"postgres", "pgx"} {
		if got := queryOne(t, driver, dsn, "SELECT 1::text"); got != "1" {
			t.Errorf("%s: SELECT 1 = %q", driver, got)
		}
	}
	if got := queryOne(t, "pgx", dsn, "SHOW fsync"); got != "off" {
		t.Errorf("fsync = %q, want off (from Settings)", got)
	}
	if got := queryOne(t, "pgx", dsn, "SHOW max_connections"); got != "300" {
		t.Errorf("max_connections = %q, want 300", got)
	}
	if _, err := os.Stat(filepath.Join(c.DataDir(), "PG_VERSION")); err != nil {
		t.Errorf("DataDir %s: %v", c.DataDir(), err)
	}

	port := c.Port()
	begin = time.Now()
	if err := c.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	t.Logf("restarted in %s", time.Since(begin).Round(time.Millisecond))
	if c.Port() != port {
		t.Errorf("port changed from %d to %d on Restart", port, c.Port())
	}
	for _, driver := range []string{"postgres", "pgx"} {
		if got := queryOne(t, driver, dsn, "SELECT 1::text"); got != "1" {
			t.Errorf("%s after Restart: SELECT 1 = %q", driver, got)
		}
	}

	// After Crash the server has recovered: a synchronous commit survives.
	{
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, "CREATE TABLE crash_kept (v int); INSERT INTO crash_kept VALUES (1)"); err != nil {
			t.Fatal(err)
		}
		db.Close()
	}
	if err := c.Crash(ctx); err != nil {
		t.Fatalf("Crash: %v", err)
	}
	if got := queryOne(t, "pgx", dsn, "SELECT count(*)::text FROM crash_kept"); got != "1" {
		t.Errorf("after Crash, the committed row count = %q, want 1", got)
	}

	pidFile := filepath.Join(c.DataDir(), "postmaster.pid")
	if _, err := os.Stat(pidFile); err != nil {
		t.Fatalf("postmaster.pid: %v", err)
	}
	begin = time.Now()
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("stopped in %s", time.Since(begin).Round(time.Millisecond))
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	root := filepath.Dir(c.DataDir())
	if _, err := os.Stat(root); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after Stop, %s: err = %v, want not exist", root, err)
	}
	if err := c.Restart(ctx); err == nil {
		t.Errorf("Restart after Stop: no error")
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.PingContext(ctx); err == nil {
		t.Errorf("server still accepts connections after Stop")
	}
}

// TestStartInDir checks Options.Dir and that a failing setting makes Start
// fail with the server log in the error and leave nothing behind.
func TestStartInDir(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	parent, err := os.MkdirTemp("", "pgcluster-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(parent)
	if err := os.Chmod(parent, 0o755); err != nil { // reachable by OS user postgres when root
		t.Fatal(err)
	}

	_, err = pgcluster.Start(ctx, pgcluster.Options{
		Dir:      parent,
		Settings: map[string]string{"no_such_setting_xyz": "1"},
	})
	if err == nil {
		t.Fatal("Start with an unknown setting: no error")
	}
	if !strings.Contains(err.Error(), "no_such_setting_xyz") {
		t.Errorf("error does not quote the server log: %v", err)
	}
	entries, _ := os.ReadDir(parent)
	if len(entries) != 0 {
		t.Errorf("failed Start left %d entries in %s", len(entries), parent)
	}

	c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: parent})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer c.Stop()
	if !strings.HasPrefix(c.DataDir(), parent+string(filepath.Separator)) {
		t.Errorf("DataDir %s is not under %s", c.DataDir(), parent)
	}
	if got := queryOne(t, "postgres", c.DSN("template1"), "SELECT current_database()::text"); got != "template1" {
		t.Errorf("current_database() = %q", got)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Errorf("Stop left %d entries in %s", len(entries), parent)
	}
}

// TestWatchdog kills (SIGKILL) a process that holds a running cluster and
// checks that the watchdog stops the server and removes its directory.
func TestWatchdog(t *testing.T) {
	if os.Getenv("PGCLUSTER_WATCHDOG_HELPER") == "1" {
		watchdogHelper()
		return
	}
	if testing.Short() {
		t.Skip("slow")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestWatchdog$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PGCLUSTER_WATCHDOG_HELPER=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var dataDir, dsn string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "DATADIR "); ok {
			dataDir = d
		}
		if d, ok := strings.CutPrefix(sc.Text(), "DSN "); ok {
			dsn = d
			break
		}
	}
	if dataDir == "" || dsn == "" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("helper did not report its cluster: %v", sc.Err())
	}
	if got := queryOne(t, "pgx", dsn, "SELECT 1::text"); got != "1" {
		t.Fatalf("SELECT 1 = %q", got)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()

	root := filepath.Dir(dataDir)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := os.Stat(root)
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still exists 30s after its owner was killed", root)
		}
		time.Sleep(100 * time.Millisecond)
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.PingContext(ctx); err == nil {
		t.Errorf("server still accepts connections after its owner was killed")
	}
}

func watchdogHelper() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("DATADIR %s\nDSN %s\n", c.DataDir(), c.DSN("postgres"))
	<-ctx.Done() // wait to be killed
	_ = c.Stop()
}

// TestLongDir checks that a Dir too long for a Unix socket path still works
// (the socket then gets a short directory of its own).
func TestLongDir(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	parent, err := os.MkdirTemp("", "pgcluster-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(parent)
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	long := filepath.Join(parent, strings.Repeat("d", 100))
	c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: long})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer c.Stop()
	if got := queryOne(t, "pgx", c.DSN("postgres"), "SELECT 1::text"); got != "1" {
		t.Errorf("SELECT 1 = %q", got)
	}
	dsn := c.DSN("postgres")
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if entries, _ := os.ReadDir(long); len(entries) != 0 {
		t.Errorf("Stop left %d entries in %s", len(entries), long)
	}
	sock, _, _ := strings.Cut(strings.TrimPrefix(dsn, "host="), " ")
	if _, err := os.Stat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket dir %s: err = %v, want not exist", sock, err)
	}
}

// TestWrapper starts the server through Options.Wrapper, whose {root}
// stands for the cluster's directory.
func TestWrapper(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{
		Settings: map[string]string{"fsync": "off"},
		Wrapper:  []string{"/bin/sh", "-c", `touch '{root}/wrapped' && exec "$0" "$@"`},
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	if got := queryOne(t, "pgx", c.DSN("postgres"), "SELECT 1::text"); got != "1" {
		t.Errorf("SELECT 1 = %q", got)
	}
	if _, err := os.Stat(filepath.Join(c.Root(), "wrapped")); err != nil {
		t.Errorf("the wrapper did not run: %v", err)
	}
}
