// Package pgcluster starts a private, throwaway PostgreSQL server for tests,
// demos and benchmarks.
//
// Start runs initdb in a fresh temporary directory, starts the server on a
// free port with its Unix socket in that directory, and returns a Cluster
// whose DSN method gives connection strings usable by both lib/pq
// ("postgres") and pgx stdlib ("pgx"). Stop shuts the server down and
// removes the directory. A shared or system server is never touched.
//
// When the calling process runs as root, the server programs run as the OS
// user "postgres" (created if missing), because initdb and postgres refuse
// to run as root.
//
// If the calling process dies without calling Stop (a panic on a test
// timeout, SIGKILL), a small watchdog shell process notices that its pipe
// from the caller was closed, stops the server with "pg_ctl stop -m
// immediate" and removes the directory, so no server is left behind.
package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options configures Start.
type Options struct {
	// Dir is the parent directory in which the cluster's own temporary
	// directory is made; "" means the default directory for temporary files
	// (os.TempDir). When running as root, every directory above it must be
	// traversable by the OS user postgres.
	Dir string
	// Settings are extra server settings, passed as "-c name=value" on the
	// postgres command line, e.g. {"fsync": "off"} for tests.
	Settings map[string]string
	// Log receives progress lines (and package-manager output when
	// PostgreSQL has to be installed); nil discards them.
	Log io.Writer
	// Install lets Start install PostgreSQL with apt-get when no server
	// binaries are found and the process runs as root. Without it, Start
	// only reports what to install.
	Install bool
	// Wrapper, when set, runs the server under another program: these
	// words come first, then the postgres executable and its arguments
	// (e.g. valgrind and its options). "{root}" in a word stands for the
	// cluster's own directory (Root), which the server's OS user can
	// write to.
	Wrapper []string
}

// Cluster is a running private PostgreSQL server. Its methods are safe for
// concurrent use.
type Cluster struct {
	bin      binaries
	root     string // the temporary directory made by Start; removed by Stop
	sockDir  string // Unix socket directory: root, or a short dir of its own
	dataDir  string
	logFile  string
	port     int
	settings map[string]string
	wrapper  []string
	owner    *osUser // non-nil when the server runs as another OS user
	log      io.Writer
	watchdog *watchdog

	mu       sync.Mutex // serialises Restart and Stop
	stopped  bool
	stopErr  error
	stopOnce sync.Once
}

const (
	initdbTimeout  = 2 * time.Minute
	pgctlTimeout   = 90 * time.Second
	readyTimeout   = 30 * time.Second
	stopTimeout    = 30 * time.Second
	portAttempts   = 5
	logTailBytes   = 4096
	maxSocketPath  = 100 // sun_path is 108 bytes on Linux, 104 on macOS
	socketFileName = "/.s.PGSQL.65535.lock"
)

// Start initialises and starts a private PostgreSQL server. Every command it
// runs is bounded by ctx and by a timeout of its own. On error nothing is
// left behind: a half-started server is stopped and its directory removed.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if err := supported(); err != nil {
		return nil, err
	}
	for name := range opts.Settings {
		if name == "" || strings.ContainsAny(name, "= \t\n'\"\\") {
			return nil, fmt.Errorf("pgcluster: invalid setting name %q", name)
		}
	}
	c := &Cluster{
		settings: maps.Clone(opts.Settings),
		wrapper:  slices.Clone(opts.Wrapper),
		log:      opts.Log,
	}
	if c.log == nil {
		c.log = io.Discard
	}
	begin := time.Now()

	bin, err := findBinaries(ctx, c.log, opts.Install)
	if err != nil {
		return nil, err
	}
	c.bin = bin
	c.logf("using PostgreSQL binaries in %s", bin.dir)

	if c.owner, err = serverUser(ctx, c.log); err != nil {
		return nil, err
	}

	if err := c.makeDirs(opts.Dir); err != nil {
		_ = c.removeDirs()
		return nil, err
	}
	if err := c.startWatchdog(); err != nil {
		_ = c.removeDirs()
		return nil, err
	}
	if err := c.initdb(ctx); err != nil {
		_ = c.cleanup()
		return nil, err
	}
	if err := c.startServer(ctx); err != nil {
		_ = c.cleanup()
		return nil, err
	}
	c.logf("server started on port %d (socket dir %s) in %s", c.port, c.sockDir, time.Since(begin).Round(time.Millisecond))
	return c, nil
}

// DSN returns a key=value connection string for database dbname, usable by
// both lib/pq ("postgres") and pgx stdlib ("pgx"). It connects over the
// Unix socket as the superuser postgres, without password or TLS.
func (c *Cluster) DSN(dbname string) string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=%s sslmode=disable",
		quoteDSNValue(c.sockDir), c.port, quoteDSNValue(dbname))
}

// Port returns the server's port. It also listens on 127.0.0.1 at this port.
func (c *Cluster) Port() int { return c.port }

// LogFile returns the path of the server's log file.
func (c *Cluster) LogFile() string { return c.logFile }

// Root returns the cluster's own directory, which Stop removes.
func (c *Cluster) Root() string { return c.root }

// DataDir returns the server's data directory.
func (c *Cluster) DataDir() string { return c.dataDir }

// Restart restarts the server with "pg_ctl restart -m fast" on the same port
// and with the same settings, and waits until it accepts connections. It
// also starts a server that has died (for instance after its postmaster was
// killed by a crash test).
func (c *Cluster) Restart(ctx context.Context) error { return c.restart(ctx, "fast") }

// Crash restarts the server as Restart does, but stops it with "pg_ctl
// restart -m immediate": the server exits without a checkpoint and without
// writing the WAL still in its buffers (commits made with synchronous_commit
// off within the last fraction of a second are lost), and recovers from
// the WAL on disk when it starts again, as after a crash.
func (c *Cluster) Crash(ctx context.Context) error { return c.restart(ctx, "immediate") }

func (c *Cluster) restart(ctx context.Context, mode string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("pgcluster: Restart called after Stop")
	}
	args := []string{"restart", "-w", "-m", mode, "-t", timeoutSeconds(ctx, pgctlTimeout),
		"-D", c.dataDir, "-l", c.logFile, "-o", c.serverOptions()}
	if _, err := c.run(ctx, pgctlTimeout, c.bin.pgctl, args...); err != nil {
		return c.withLogTail(fmt.Errorf("pgcluster: restart -m %s: %w", mode, err), 0)
	}
	if err := c.waitReady(ctx); err != nil {
		return c.withLogTail(err, 0)
	}
	c.logf("server restarted on port %d", c.port)
	return nil
}

// Stop stops the server with "pg_ctl stop -m immediate" (falling back to
// killing the postmaster) and removes the cluster's temporary directory.
// It is safe to call more than once; later calls return the first result.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.stopped = true
		c.stopErr = c.cleanup()
	})
	return c.stopErr
}

// cleanup stops the server, the watchdog, and removes the directories.
func (c *Cluster) cleanup() error {
	// Stop the watchdog first so it does not race us for the directory.
	c.watchdog.stop()
	err := c.stopServer()
	if rmErr := c.removeDirs(); rmErr != nil && err == nil {
		err = rmErr
	}
	return err
}

func (c *Cluster) stopServer() error {
	if c.dataDir == "" {
		return nil
	}
	if _, err := os.Stat(filepath.Join(c.dataDir, "PG_VERSION")); err != nil {
		return nil // initdb never completed: nothing can be running
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	_, err := c.run(ctx, stopTimeout, c.bin.pgctl, "stop", "-w", "-m", "immediate", "-t", "20", "-D", c.dataDir)
	if err == nil {
		return nil
	}
	pid, ok := postmasterPID(c.dataDir)
	if !ok {
		// No pid file: the server was not running (pg_ctl says so too).
		return nil
	}
	if !processAlive(pid) {
		return nil
	}
	c.logf("pg_ctl stop failed (%v); killing postmaster %d", err, pid)
	if kerr := killProcess(pid); kerr != nil {
		return fmt.Errorf("pgcluster: stop: %w; kill postmaster %d: %v", err, pid, kerr)
	}
	deadline := time.Now().Add(5 * time.Second)
	for processAlive(pid) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func (c *Cluster) removeDirs() error {
	var errs []error
	if c.sockDir != "" && c.sockDir != c.root {
		if err := os.RemoveAll(c.sockDir); err != nil {
			errs = append(errs, err)
		}
	}
	if c.root != "" {
		if err := os.RemoveAll(c.root); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pgcluster: remove directory: %w", err)
	}
	return nil
}

func (c *Cluster) makeDirs(parent string) error {
	if parent != "" {
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
	}
	root, err := os.MkdirTemp(parent, "pgcluster-")
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if root, err = filepath.Abs(root); err != nil {
		_ = os.RemoveAll(root)
		return fmt.Errorf("pgcluster: %w", err)
	}
	c.root = root
	c.dataDir = filepath.Join(root, "data")
	c.logFile = filepath.Join(root, "server.log")
	c.sockDir = root
	if len(root)+len(socketFileName) > maxSocketPath {
		// The socket path would be too long for sun_path: use a short
		// directory of its own.
		if c.sockDir, err = os.MkdirTemp("/tmp", "pgsock-"); err != nil {
			return fmt.Errorf("pgcluster: socket directory: %w", err)
		}
	}
	for _, dir := range []string{c.root, c.sockDir} {
		// 0755: a root caller must reach the socket of a server that runs
		// as postgres, and vice versa.
		if err := os.Chmod(dir, 0o755); err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
		if c.owner != nil {
			if err := os.Chown(dir, c.owner.uid, c.owner.gid); err != nil {
				return fmt.Errorf("pgcluster: chown %s to %s: %w", dir, c.owner.name, err)
			}
		}
	}
	return nil
}

func (c *Cluster) initdb(ctx context.Context) error {
	c.logf("initdb %s", c.dataDir)
	_, err := c.run(ctx, initdbTimeout, c.bin.initdb,
		"-D", c.dataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
	if err != nil {
		if c.owner != nil {
			err = fmt.Errorf("%w (the server runs as OS user %s, which must be able to traverse every directory above %s)",
				err, c.owner.name, c.root)
		}
		return fmt.Errorf("pgcluster: %w", err)
	}
	return nil
}

// startServer picks a free port and starts the server, retrying with another
// port when the chosen one was taken in the meantime.
func (c *Cluster) startServer(ctx context.Context) error {
	var lastErr error
	for attempt := 0; attempt < portAttempts; attempt++ {
		port, err := freePort()
		if err != nil {
			return fmt.Errorf("pgcluster: pick a port: %w", err)
		}
		c.port = port
		logOffset := fileSize(c.logFile)
		args := []string{"start", "-w", "-t", timeoutSeconds(ctx, pgctlTimeout),
			"-D", c.dataDir, "-l", c.logFile, "-o", c.serverOptions()}
		if len(c.wrapper) > 0 {
			exe, err := c.writeWrapper()
			if err != nil {
				return err
			}
			args = append(args, "-p", exe)
		}
		_, err = c.run(ctx, pgctlTimeout, c.bin.pgctl, args...)
		if err == nil {
			err = c.waitReady(ctx)
		}
		if err == nil {
			return nil
		}
		lastErr = c.withLogTail(fmt.Errorf("pgcluster: start server: %w", err), logOffset)
		// Whatever happened, make sure no half-started server lingers
		// before retrying or giving up.
		_ = c.stopServer()
		if ctx.Err() != nil || !portTaken(readFrom(c.logFile, logOffset)) {
			return lastErr
		}
		c.logf("port %d was taken; retrying with another port", port)
	}
	return lastErr
}

// writeWrapper writes the script that pg_ctl starts in place of postgres
// (Options.Wrapper) and returns its path.
func (c *Cluster) writeWrapper() (string, error) {
	words := make([]string, 0, len(c.wrapper)+1)
	for _, w := range c.wrapper {
		words = append(words, shellQuote(strings.ReplaceAll(w, "{root}", c.root)))
	}
	words = append(words, shellQuote(filepath.Join(c.bin.dir, "postgres")))
	exe := filepath.Join(c.root, "postgres-wrapper")
	script := "#!/bin/sh\nexec " + strings.Join(words, " ") + " \"$@\"\n"
	if err := os.WriteFile(exe, []byte(script), 0o755); err != nil {
		return "", fmt.Errorf("pgcluster: wrapper: %w", err)
	}
	if err := os.Chmod(exe, 0o755); err != nil { // whatever the umask
		return "", fmt.Errorf("pgcluster: wrapper: %w", err)
	}
	return exe, nil
}

// serverOptions returns the postgres command-line options for pg_ctl -o.
// pg_ctl passes them through /bin/sh, so each word is shell-quoted.
func (c *Cluster) serverOptions() string {
	words := []string{
		"-p", strconv.Itoa(c.port),
		"-k", c.sockDir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "max_connections=300",
	}
	for _, name := range slices.Sorted(maps.Keys(c.settings)) {
		words = append(words, "-c", name+"="+c.settings[name])
	}
	quoted := make([]string, len(words))
	for i, w := range words {
		quoted[i] = shellQuote(w)
	}
	return strings.Join(quoted, " ")
}

// waitReady waits until the server accepts connections on its socket, using
// pg_isready when it is available (pg_ctl -w has normally waited already).
func (c *Cluster) waitReady(ctx context.Context) error {
	if c.bin.pgisready == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var lastErr error
	for {
		_, err := c.run(ctx, 10*time.Second, c.bin.pgisready,
			"-q", "-h", c.sockDir, "-p", strconv.Itoa(c.port), "-U", "postgres", "-d", "postgres")
		if err == nil {
			return nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgcluster: server not accepting connections: %w (last check: %v)", ctx.Err(), lastErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// run runs a server program (as the server's OS user when running as
// root) with a deadline, and returns its combined output. Errors name the
// command and include its output.
func (c *Cluster) run(ctx context.Context, timeout time.Duration, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = c.root // the server user may not be able to read the caller's cwd
	cmd.Env = serverEnv()
	cmd.SysProcAttr = sysProcAttr(c.owner, false)
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", err, ctx.Err())
		}
		return out.Bytes(), fmt.Errorf("%s: %w: %s", commandLine(name, args), err, strings.TrimSpace(out.String()))
	}
	return out.Bytes(), nil
}

// withLogTail appends the tail of the server log (from offset on) to err.
func (c *Cluster) withLogTail(err error, offset int64) error {
	tail := strings.TrimSpace(readFrom(c.logFile, offset))
	if tail == "" {
		return err
	}
	if len(tail) > logTailBytes {
		tail = "…" + tail[len(tail)-logTailBytes:]
	}
	return fmt.Errorf("%w\nserver log (%s):\n%s", err, c.logFile, tail)
}

func (c *Cluster) logf(format string, args ...any) {
	fmt.Fprintf(c.log, "pgcluster: "+format+"\n", args...)
}

// serverEnv is the environment of server programs: the caller's, without
// PG* variables (PGDATA, PGPORT, PGHOST… would redirect pg_ctl), and with
// the C locale so messages are predictable.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C", "LANG=C")
}

// portTaken reports whether a server log says the TCP port was in use.
func portTaken(log string) bool {
	return strings.Contains(log, "Address already in use") ||
		strings.Contains(log, "could not bind") ||
		strings.Contains(log, "could not create any TCP/IP sockets") ||
		strings.Contains(log, "is another postmaster already running")
}

func postmasterPID(dataDir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func readFrom(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(f, 1<<20))
	return string(b)
}

// timeoutSeconds is the -t value for pg_ctl: the smaller of limit and the
// time left before ctx's deadline, at least one second.
func timeoutSeconds(ctx context.Context, limit time.Duration) string {
	if dl, ok := ctx.Deadline(); ok {
		limit = min(limit, time.Until(dl))
	}
	return strconv.Itoa(max(1, int(limit/time.Second)))
}

func commandLine(name string, args []string) string {
	words := []string{filepath.Base(name)}
	for _, a := range args {
		words = append(words, shellQuote(a))
	}
	return strings.Join(words, " ")
}

// shellQuote quotes s for /bin/sh when it contains anything but safe
// characters.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=./:,+@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// quoteDSNValue quotes a value for a libpq key=value connection string.
func quoteDSNValue(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n\r\v\f'\\") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(s) + "'"
}
