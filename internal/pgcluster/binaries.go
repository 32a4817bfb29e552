package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// binaries are the absolute paths of the server programs in use.
type binaries struct {
	dir       string // where initdb lives
	initdb    string
	pgctl     string
	pgisready string // optional
}

// installMu serialises package installation within the process.
var installMu sync.Mutex

const installTimeout = 10 * time.Minute

// errNotFound is wrapped by the error returned when no server binaries can be
// found or installed.
var errNotFound = errors.New("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found")

// findBinaries locates the server binaries, installing PostgreSQL with
// apt-get when none are found, install is set and the process runs as root
// on a system that has apt-get.
func findBinaries(ctx context.Context, log io.Writer, install bool) (binaries, error) {
	if b, ok := locateBinaries(ctx); ok {
		return b, nil
	}
	apt, err := exec.LookPath("apt-get")
	if !install || os.Geteuid() != 0 || err != nil {
		return binaries{}, fmt.Errorf("pgcluster: %w: install PostgreSQL (Debian/Ubuntu: apt-get install postgresql; "+
			"Fedora: dnf install postgresql-server; macOS: brew install postgresql) or put its bin directory "+
			"(see pg_config --bindir) on PATH", errNotFound)
	}

	installMu.Lock()
	defer installMu.Unlock()
	if b, ok := locateBinaries(ctx); ok { // installed meanwhile
		return b, nil
	}
	fmt.Fprintf(log, "pgcluster: %v; installing it with apt-get\n", errNotFound)
	if err := runInstall(ctx, log, apt, "update"); err != nil {
		return binaries{}, err
	}
	if err := runInstall(ctx, log, apt, "install", "-y", "--no-install-recommends", "postgresql"); err != nil {
		return binaries{}, err
	}
	if b, ok := locateBinaries(ctx); ok {
		return b, nil
	}
	return binaries{}, fmt.Errorf("pgcluster: %w, even after apt-get install postgresql", errNotFound)
}

func runInstall(ctx context.Context, log io.Writer, apt string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, installTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, apt, args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	cmd.WaitDelay = 5 * time.Second
	var out tailBuffer
	w := io.MultiWriter(&out, log)
	cmd.Stdout = w
	cmd.Stderr = w
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pgcluster: %s: %w: %s", commandLine(apt, args), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// locateBinaries looks for the server binaries: in pg_config --bindir, then
// in the newest /usr/lib/postgresql/*/bin, then on PATH.
func locateBinaries(ctx context.Context) (binaries, bool) {
	var dirs []string
	if pgConfig, err := exec.LookPath("pg_config"); err == nil {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err := exec.CommandContext(cctx, pgConfig, "--bindir").Output()
		cancel()
		if err == nil {
			dirs = append(dirs, strings.TrimSpace(string(out)))
		}
	}
	dirs = append(dirs, debianBinDirs()...)
	for _, dir := range dirs {
		if b, ok := binariesIn(dir); ok {
			return b, true
		}
	}

	initdb, err1 := exec.LookPath("initdb")
	pgctl, err2 := exec.LookPath("pg_ctl")
	if err1 != nil || err2 != nil {
		return binaries{}, false
	}
	// pg_ctl finds postgres next to its own (symlink-resolved) location.
	if b, ok := binariesIn(resolvedDir(pgctl)); ok {
		return b, true
	}
	b := binaries{dir: filepath.Dir(initdb), initdb: initdb, pgctl: pgctl}
	b.pgisready, _ = exec.LookPath("pg_isready")
	return b, true
}

// debianBinDirs returns /usr/lib/postgresql/*/bin, newest version first.
func debianBinDirs() []string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(dir string) float64 {
		v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
		if err != nil {
			return -1
		}
		return v
	}
	slices.SortFunc(dirs, func(a, b string) int {
		va, vb := version(a), version(b)
		switch {
		case va > vb:
			return -1
		case va < vb:
			return 1
		}
		return strings.Compare(a, b)
	})
	return dirs
}

func binariesIn(dir string) (binaries, bool) {
	if dir == "" {
		return binaries{}, false
	}
	for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
		if !isExecutable(filepath.Join(dir, name)) {
			return binaries{}, false
		}
	}
	b := binaries{
		dir:    dir,
		initdb: filepath.Join(dir, "initdb"),
		pgctl:  filepath.Join(dir, "pg_ctl"),
	}
	if p := filepath.Join(dir, "pg_isready"); isExecutable(p) {
		b.pgisready = p
	} else {
		b.pgisready, _ = exec.LookPath("pg_isready")
	}
	return b, true
}

func resolvedDir(path string) string {
	if r, err := filepath.EvalSymlinks(path); err == nil {
		path = r
	}
	return filepath.Dir(path)
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tailBuffer keeps the last 8 KiB written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	const keep = 8 << 10
	t.buf.Write(p)
	if t.buf.Len() > 2*keep {
		tail := slices.Clone(t.buf.Bytes()[t.buf.Len()-keep:])
		t.buf.Reset()
		t.buf.Write(tail)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.buf.String()
	if len(s) > 4096 {
		s = "…" + s[len(s)-4096:]
	}
	return s
}
