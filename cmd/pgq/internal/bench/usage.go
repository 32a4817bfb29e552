package bench

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of the times in /proc/<pid>/stat (USER_HZ, 100 on
// every Linux architecture Go supports).
const clockTick = 10 * time.Millisecond

// cpuSample is the CPU time used so far by the client and by the server.
type cpuSample struct {
	client time.Duration
	server time.Duration
}

// sub returns the CPU time spent between b and s.
func (s cpuSample) sub(b cpuSample) cpuSample {
	return cpuSample{client: s.client - b.client, server: s.server - b.server}
}

// cpuMeter samples CPU time. The server part is read from /proc when the
// server runs on this machine and its processes are readable; otherwise it
// stays 0.
type cpuMeter struct {
	postmaster int // 0 when the server's processes cannot be read
}

// newCPUMeter finds the postmaster of db's server: the parent process of a
// backend, when both are readable in /proc and are PostgreSQL processes.
func newCPUMeter(ctx context.Context, db *sql.DB) *cpuMeter {
	m := &cpuMeter{}
	var backend int
	if db.QueryRowContext(ctx, sqlBackendPID).Scan(&backend) != nil {
		return m
	}
	st, ok := readStat(backend)
	if !ok || !isPostgres(backend) || !isPostgres(st.ppid) {
		return m
	}
	m.postmaster = st.ppid
	return m
}

// serverReadable reports whether the server's CPU time can be read.
func (m *cpuMeter) serverReadable() bool { return m.postmaster != 0 }

func (m *cpuMeter) sample() cpuSample {
	return cpuSample{client: clientCPU(), server: m.serverCPU()}
}

// serverCPU sums the user and system time of the postmaster, of its
// children that have exited (cutime, cstime) and of its live children
// (backends, background workers, autovacuum).
func (m *cpuMeter) serverCPU() time.Duration {
	if m.postmaster == 0 {
		return 0
	}
	pm, ok := readStat(m.postmaster)
	if !ok {
		return 0
	}
	total := pm.utime + pm.stime + pm.cutime + pm.cstime
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == m.postmaster {
			continue
		}
		if st, ok := readStat(pid); ok && st.ppid == m.postmaster {
			total += st.utime + st.stime
		}
	}
	return time.Duration(total) * clockTick
}

type procStat struct {
	ppid                         int
	utime, stime, cutime, cstime int64
}

// readStat reads /proc/<pid>/stat.
func readStat(pid int) (procStat, bool) {
	if runtime.GOOS != "linux" {
		return procStat{}, false
	}
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, false
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// the fields after its closing parenthesis start with field 3, state.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return procStat{}, false
	}
	num := func(k int) int64 { // field number k of proc(5), counted from 1
		v, _ := strconv.ParseInt(f[k-3], 10, 64)
		return v
	}
	return procStat{
		ppid:   int(num(4)),
		utime:  num(14),
		stime:  num(15),
		cutime: num(16),
		cstime: num(17),
	}, true
}

// isPostgres reports whether pid runs a PostgreSQL server program.
func isPostgres(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return false
	}
	return strings.Contains(string(b), "postgres") || strings.Contains(string(b), "postmaster")
}
