package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgq-dev/pgq/internal/dsn"
)

// ErrNoPgBouncer is wrapped by the error of StartPgBouncer and
// FindPgBouncer when no pgbouncer program can be found or installed.
var ErrNoPgBouncer = errors.New("pgbouncer not found")

// Pool modes of PgBouncer.
const (
	PoolSession     = "session"
	PoolTransaction = "transaction"
	PoolStatement   = "statement"
)

// PgBouncerOptions configures StartPgBouncer.
type PgBouncerOptions struct {
	// Server is the connection string (key=value or URL) of the PostgreSQL
	// server PgBouncer connects to: its host, port, user and password.
	// Every database of that server is reachable through PgBouncer under
	// its own name.
	Server string
	// PoolMode is PoolSession (the default when ""), PoolTransaction or
	// PoolStatement.
	PoolMode string
	// Settings are extra [pgbouncer] settings, e.g. {"default_pool_size":
	// "5"}; they override the defaults StartPgBouncer writes.
	Settings map[string]string
	// Dir is the parent directory of PgBouncer's own temporary directory
	// (configuration, auth file, log); "" means os.TempDir.
	Dir string
	// Log receives progress lines (and package-manager output when
	// PgBouncer has to be installed); nil discards them.
	Log io.Writer
}

// PgBouncer is a running private PgBouncer. Its methods are safe for
// concurrent use.
type PgBouncer struct {
	root    string
	logFile string
	port    int
	mode    string
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has exited
	exitErr error         // set before exited is closed
	watch   *exec.Cmd     // kills PgBouncer and removes root if this process dies
	watchW  *os.File

	stopOnce sync.Once
	stopErr  error
}

const (
	bouncerStartTimeout = 15 * time.Second
	bouncerStopTimeout  = 10 * time.Second
)

// StartPgBouncer starts a private PgBouncer in front of opts.Server,
// listening on 127.0.0.1 at a free port, with its configuration, auth file
// (auth_type trust, the server's user with its password) and log in a
// fresh temporary directory. It finds the pgbouncer program as
// FindPgBouncer does. As root it runs PgBouncer as the OS user postgres
// (PgBouncer refuses to run as root). Stop stops it and removes the
// directory; if the calling process dies first, a watchdog does.
func StartPgBouncer(ctx context.Context, opts PgBouncerOptions) (*PgBouncer, error) {
	if err := supported(); err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	mode := opts.PoolMode
	if mode == "" {
		mode = PoolSession
	}
	if mode != PoolSession && mode != PoolTransaction && mode != PoolStatement {
		return nil, fmt.Errorf("pgcluster: PgBouncer pool mode %q: want session, transaction or statement", mode)
	}
	for name, v := range opts.Settings {
		if name == "" || strings.ContainsAny(name, "= \t\n[]") || strings.ContainsAny(v, "\n\r") {
			return nil, fmt.Errorf("pgcluster: invalid PgBouncer setting %q = %q", name, v)
		}
	}
	srv, err := pgconn.ParseConfig(opts.Server)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: PgBouncer's server: %w", err)
	}
	bin, err := FindPgBouncer(ctx, log)
	if err != nil {
		return nil, err
	}
	owner, err := serverUser(ctx, log)
	if err != nil {
		return nil, err
	}

	b := &PgBouncer{mode: mode, exited: make(chan struct{})}
	if b.root, err = os.MkdirTemp(opts.Dir, "pgbouncer-"); err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	if b.root, err = filepath.Abs(b.root); err != nil {
		_ = os.RemoveAll(b.root)
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	b.logFile = filepath.Join(b.root, "pgbouncer.log")
	fail := func(err error) (*PgBouncer, error) {
		_ = b.Stop()
		return nil, err
	}
	if err := os.Chmod(b.root, 0o755); err != nil {
		return fail(fmt.Errorf("pgcluster: %w", err))
	}

	users := fmt.Sprintf("%s %s\n", bouncerQuote(srv.User), bouncerQuote(srv.Password))
	settings := map[string]string{
		"listen_addr":       "127.0.0.1",
		"unix_socket_dir":   "",
		"auth_type":         "trust",
		"auth_file":         filepath.Join(b.root, "users.txt"),
		"pool_mode":         mode,
		"logfile":           b.logFile,
		"max_client_conn":   "1000",
		"default_pool_size": "40",
		// lib/pq sends it at start-up; PgBouncer refuses parameters it
		// does not know unless told to ignore them.
		"ignore_startup_parameters": "extra_float_digits",
	}
	maps.Copy(settings, opts.Settings)
	server := fmt.Sprintf("host=%s port=%d", srv.Host, srv.Port)

	var lastErr error
	for range portAttempts {
		if b.port, err = freePort(); err != nil {
			return fail(fmt.Errorf("pgcluster: pick a port: %w", err))
		}
		settings["listen_port"] = strconv.Itoa(b.port)
		var conf strings.Builder
		fmt.Fprintf(&conf, "[databases]\n* = %s\n\n[pgbouncer]\n", server)
		for _, k := range slices.Sorted(maps.Keys(settings)) {
			fmt.Fprintf(&conf, "%s = %s\n", k, settings[k])
		}
		for name, text := range map[string]string{"users.txt": users, "pgbouncer.ini": conf.String()} {
			if err := writeOwned(filepath.Join(b.root, name), text, owner); err != nil {
				return fail(err)
			}
		}
		if owner != nil {
			if err := os.Chown(b.root, owner.uid, owner.gid); err != nil {
				return fail(fmt.Errorf("pgcluster: chown %s to %s: %w", b.root, owner.name, err))
			}
		}
		offset := fileSize(b.logFile)
		if lastErr = b.start(ctx, bin, owner, log); lastErr == nil {
			fmt.Fprintf(log, "pgcluster: PgBouncer (%s mode) listening on port %d in front of %s:%d\n", mode, b.port, srv.Host, srv.Port)
			return b, nil
		}
		b.stopWatchdog()
		if ctx.Err() != nil || !strings.Contains(readFrom(b.logFile, offset)+lastErr.Error(), "in use") {
			break
		}
		fmt.Fprintf(log, "pgcluster: port %d was taken; retrying with another port\n", b.port)
		b.cmd, b.exited, b.exitErr = nil, make(chan struct{}), nil
	}
	return fail(b.withLog(lastErr))
}

// start runs pgbouncer and waits until it accepts connections.
func (b *PgBouncer) start(ctx context.Context, bin string, owner *osUser, log io.Writer) error {
	cmd := exec.Command(bin, filepath.Join(b.root, "pgbouncer.ini"))
	cmd.Dir = b.root
	cmd.Env = serverEnv()
	cmd.SysProcAttr = sysProcAttr(owner, true)
	var out tailBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgcluster: start %s: %w", bin, err)
	}
	b.cmd = cmd
	go func() {
		err := cmd.Wait()
		if s := strings.TrimSpace(out.String()); s != "" {
			err = fmt.Errorf("%v: %s", err, s)
		}
		b.exitErr = err
		close(b.exited)
	}()
	if err := b.startWatchdog(); err != nil {
		return err
	}
	deadline := time.Now().Add(bouncerStartTimeout)
	for {
		d := net.Dialer{Timeout: time.Second}
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)))
		if err == nil {
			_ = c.Close()
			return nil
		}
		select {
		case <-b.exited:
			return fmt.Errorf("pgcluster: pgbouncer exited at start: %v", b.exitErr)
		case <-ctx.Done():
			b.kill()
			return fmt.Errorf("pgcluster: start PgBouncer: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.kill()
			return fmt.Errorf("pgcluster: PgBouncer not accepting connections on port %d after %v", b.port, bouncerStartTimeout)
		}
	}
}

// watchdogBouncer: $0 = PgBouncer's pid, $1 = its directory.
const watchdogBouncer = `trap '' INT TERM HUP
read _
kill -INT "$0" 2>/dev/null
i=0
while [ $i -lt 20 ] && kill -0 "$0" 2>/dev/null; do sleep 0.5; i=$((i+1)); done
kill -KILL "$0" 2>/dev/null
rm -rf "$1"`

func (b *PgBouncer) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("pgcluster: watchdog pipe: %w", err)
	}
	defer r.Close()
	cmd := exec.Command("/bin/sh", "-c", watchdogBouncer, strconv.Itoa(b.cmd.Process.Pid), b.root)
	cmd.Stdin = r
	cmd.Dir = "/"
	cmd.SysProcAttr = sysProcAttr(nil, true)
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("pgcluster: start watchdog: %w", err)
	}
	b.watch, b.watchW = cmd, w
	return nil
}

// stopWatchdog kills the watchdog without letting it act.
func (b *PgBouncer) stopWatchdog() {
	if b.watch != nil {
		_ = b.watch.Process.Kill()
		_ = b.watch.Wait()
		_ = b.watchW.Close()
		b.watch, b.watchW = nil, nil
	}
}

// kill stops the process at once and waits for it.
func (b *PgBouncer) kill() {
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Kill()
	<-b.exited
}

// Port returns the TCP port PgBouncer listens on at 127.0.0.1.
func (b *PgBouncer) Port() int { return b.port }

// PoolMode returns PgBouncer's pool mode.
func (b *PgBouncer) PoolMode() string { return b.mode }

// LogTail returns the end of PgBouncer's log, for test failures.
func (b *PgBouncer) LogTail() string {
	s := readFrom(b.logFile, max(0, fileSize(b.logFile)-logTailBytes))
	return strings.TrimSpace(s)
}

// DSN returns serverDSN (key=value or URL, as given to clients of the
// server) with its host and port replaced by PgBouncer's: the same user,
// database and options, through PgBouncer.
func (b *PgBouncer) DSN(serverDSN string) (string, error) {
	return WithHostPort(serverDSN, "127.0.0.1", b.port)
}

// WithHostPort returns serverDSN (key=value or URL) with its host and port
// replaced by host and port (and any hostaddr dropped): the same user,
// database and options, through another address, such as a pooler's or a
// test's proxy.
func WithHostPort(serverDSN, host string, port int) (string, error) {
	p := strconv.Itoa(port)
	if dsn.IsURL(serverDSN) {
		u, err := url.Parse(serverDSN)
		if err != nil {
			return "", fmt.Errorf("pgcluster: parse DSN: %w", err)
		}
		u.Host = net.JoinHostPort(host, p)
		q := u.Query()
		q.Del("host")
		q.Del("hostaddr")
		q.Del("port")
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	pairs, err := dsn.ParseKeywordValue(serverDSN)
	if err != nil {
		return "", fmt.Errorf("pgcluster: parse DSN: %w", err)
	}
	pairs = slices.DeleteFunc(pairs, func(p dsn.Pair) bool {
		return p.Key == "host" || p.Key == "hostaddr" || p.Key == "port"
	})
	pairs = append([]dsn.Pair{{Key: "host", Value: host}, {Key: "port", Value: p}}, pairs...)
	return dsn.Join(pairs), nil
}

// Stop stops PgBouncer (SIGINT, then SIGKILL after a while) and removes
// its directory. It is safe to call more than once.
func (b *PgBouncer) Stop() error {
	b.stopOnce.Do(func() {
		if b.cmd != nil {
			_ = b.cmd.Process.Signal(os.Interrupt)
			select {
			case <-b.exited:
			case <-time.After(bouncerStopTimeout):
				b.kill()
			}
		}
		b.stopWatchdog()
		if err := os.RemoveAll(b.root); err != nil {
			b.stopErr = fmt.Errorf("pgcluster: remove directory: %w", err)
		}
	})
	return b.stopErr
}

func (b *PgBouncer) withLog(err error) error {
	if tail := b.LogTail(); tail != "" {
		return fmt.Errorf("%w\nPgBouncer log (%s):\n%s", err, b.logFile, tail)
	}
	return err
}

// bouncerQuote quotes s for PgBouncer's auth file.
func bouncerQuote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func writeOwned(path, text string, owner *osUser) error {
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if owner != nil {
		if err := os.Chown(path, owner.uid, owner.gid); err != nil {
			return fmt.Errorf("pgcluster: chown %s to %s: %w", path, owner.name, err)
		}
	}
	return nil
}

// pgbouncerFound caches FindPgBouncer's answer for the process, so that a
// failed installation is not tried again by every test.
var pgbouncerFound struct {
	sync.Mutex
	done bool
	path string
	err  error
}

// FindPgBouncer returns the path of the pgbouncer program: on PATH, or in
// /usr/sbin, /usr/local/sbin, /usr/local/bin or /opt/homebrew/bin. When
// there is none and the process runs as root on a system with apt-get, it
// installs Debian's pgbouncer package first, saying so on log (nil: say
// nothing). The error wraps ErrNoPgBouncer when none can be found or
// installed.
func FindPgBouncer(ctx context.Context, log io.Writer) (string, error) {
	if log == nil {
		log = io.Discard
	}
	pgbouncerFound.Lock()
	defer pgbouncerFound.Unlock()
	if !pgbouncerFound.done {
		pgbouncerFound.path, pgbouncerFound.err = findPgBouncer(ctx, log)
		pgbouncerFound.done = pgbouncerFound.err == nil || errors.Is(pgbouncerFound.err, ErrNoPgBouncer)
	}
	return pgbouncerFound.path, pgbouncerFound.err
}

func findPgBouncer(ctx context.Context, log io.Writer) (string, error) {
	if p, ok := locatePgBouncer(); ok {
		return p, nil
	}
	apt, err := exec.LookPath("apt-get")
	if os.Geteuid() != 0 || err != nil {
		return "", fmt.Errorf("pgcluster: %w: install it (Debian/Ubuntu: apt-get install pgbouncer; "+
			"Fedora: dnf install pgbouncer; macOS: brew install pgbouncer) or put it on PATH", ErrNoPgBouncer)
	}
	installMu.Lock()
	defer installMu.Unlock()
	if p, ok := locatePgBouncer(); ok {
		return p, nil
	}
	fmt.Fprintf(log, "pgcluster: %v; installing it with apt-get\n", ErrNoPgBouncer)
	err = runInstall(ctx, log, apt, "install", "-y", "--no-install-recommends", "pgbouncer")
	if err != nil {
		// The package lists may be missing or stale.
		if err = runInstall(ctx, log, apt, "update"); err == nil {
			err = runInstall(ctx, log, apt, "install", "-y", "--no-install-recommends", "pgbouncer")
		}
	}
	if p, ok := locatePgBouncer(); ok {
		return p, nil
	}
	if err != nil {
		return "", fmt.Errorf("%w (%w)", err, ErrNoPgBouncer)
	}
	return "", fmt.Errorf("pgcluster: %w, even after apt-get install pgbouncer", ErrNoPgBouncer)
}

func locatePgBouncer() (string, bool) {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, true
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/opt/homebrew/bin"} {
		if p := filepath.Join(dir, "pgbouncer"); isExecutable(p) {
			return p, true
		}
	}
	return "", false
}
