package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTick is the unit of the times in /proc/<pid>/stat (USER_HZ).
const clockTick = 10 * time.Millisecond

// cpuPoint is the CPU time used so far by a client process (with its
// descendants) and by the server (the postmaster and its children), at t.
type cpuPoint struct {
	t              time.Time
	client, server time.Duration
}

// sampler reads a client's and the server's CPU time from /proc every
// interval until stopped, so that the CPU used within a span the client
// reports afterwards can be read off.
type sampler struct {
	client, postmaster int
	mu                 sync.Mutex
	points             []cpuPoint
	stop               chan struct{}
	done               chan struct{}
	// mark, when set, is called at each sample; the first time it returns
	// true, the sample's time is kept as marked.
	mark   func() bool
	marked time.Time
}

func startSampler(client, postmaster int, every time.Duration, mark func() bool) *sampler {
	s := &sampler{client: client, postmaster: postmaster, stop: make(chan struct{}), done: make(chan struct{}), mark: mark}
	s.take()
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				s.take()
			}
		}
	}()
	return s
}

func (s *sampler) take() {
	stats := allStats()
	client, ok := treeCPU(stats, s.client)
	server, _ := treeCPU(stats, s.postmaster)
	p := cpuPoint{t: time.Now(), client: client, server: server}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ok && len(s.points) > 0 { // exited: its CPU can no longer be read
		p.client = s.points[len(s.points)-1].client
	}
	s.points = append(s.points, p)
	if s.mark != nil && s.marked.IsZero() && s.mark() {
		s.marked = p.t
	}
}

// finish stops the sampler and returns the time mark first held.
func (s *sampler) finish() time.Time {
	close(s.stop)
	<-s.done
	s.take()
	return s.marked
}

// within returns the CPU used between from and to, interpolating
// linearly between samples.
func (s *sampler) within(from, to time.Time) (client, server time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, b := s.at(from), s.at(to)
	return b.client - a.client, b.server - a.server
}

func (s *sampler) at(t time.Time) cpuPoint {
	ps := s.points
	if len(ps) == 0 {
		return cpuPoint{}
	}
	if !t.After(ps[0].t) {
		return ps[0]
	}
	for i := 1; i < len(ps); i++ {
		if !t.After(ps[i].t) {
			a, b := ps[i-1], ps[i]
			f := float64(t.Sub(a.t)) / float64(b.t.Sub(a.t))
			lerp := func(x, y time.Duration) time.Duration { return x + time.Duration(f*float64(y-x)) }
			return cpuPoint{t: t, client: lerp(a.client, b.client), server: lerp(a.server, b.server)}
		}
	}
	return ps[len(ps)-1]
}

// treeCPU returns the user and system time of pid, of its children that
// have exited (cutime, cstime) and of its live descendants; false when pid
// is not running.
func treeCPU(stats map[int]procStat, pid int) (time.Duration, bool) {
	root, ok := stats[pid]
	if !ok {
		return 0, false
	}
	total := root.utime + root.stime + root.cutime + root.cstime
	children := map[int][]int{}
	for p, st := range stats {
		children[st.ppid] = append(children[st.ppid], p)
	}
	queue := children[pid]
	for len(queue) > 0 {
		p := queue[0]
		queue = append(queue[1:], children[p]...)
		total += stats[p].utime + stats[p].stime
	}
	return time.Duration(total) * clockTick, true
}

type procStat struct {
	ppid                         int
	utime, stime, cutime, cstime int64
}

// allStats reads /proc/<pid>/stat of every process.
func allStats() map[int]procStat {
	out := map[int]procStat{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readStat(pid); ok {
			out[pid] = st
		}
	}
	return out
}

func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, false
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return procStat{}, false
	}
	num := func(k int) int64 { // field k of proc(5), counted from 1
		v, _ := strconv.ParseInt(f[k-3], 10, 64)
		return v
	}
	return procStat{ppid: int(num(4)), utime: num(14), stime: num(15), cutime: num(16), cstime: num(17)}, true
}
