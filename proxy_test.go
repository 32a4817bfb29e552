package pgq_test

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgq-dev/pgq/internal/pgcluster"
)

// gate is a TCP proxy to the test server that a test can close: while it
// is closed, new connections are accepted and held, silent, until it
// opens (connections already through are not touched).
type gate struct {
	upNet, upAddr string
	ln            net.Listener

	mu     sync.Mutex
	open   bool
	opened chan struct{} // closed when the gate opens; replaced when it closes
	held   int           // connections waiting at the gate now
	conns  []net.Conn
	wg     sync.WaitGroup
}

// gatedProxy starts a gate in front of the server dsn names, open, and
// returns the DSN of the same database through it. It stops with t.
func gatedProxy(t *testing.T, dsn string) (string, *gate) {
	t.Helper()
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{upNet: "tcp", upAddr: net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port)), open: true,
		opened: make(chan struct{})}
	close(g.opened)
	if strings.HasPrefix(cfg.Host, "/") {
		g.upNet, g.upAddr = "unix", filepath.Join(cfg.Host, fmt.Sprintf(".s.PGSQL.%d", cfg.Port))
	}
	if g.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	g.wg.Go(g.accept)
	t.Cleanup(g.stop)
	proxied, err := pgcluster.WithHostPort(dsn, "127.0.0.1", g.ln.Addr().(*net.TCPAddr).Port)
	if err != nil {
		t.Fatal(err)
	}
	return proxied, g
}

func (g *gate) accept() {
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		g.mu.Lock()
		g.conns = append(g.conns, c)
		g.mu.Unlock()
		g.wg.Go(func() { g.serve(c) })
	}
}

// serve holds c while the gate is closed, then pipes it to the server.
func (g *gate) serve(c net.Conn) {
	defer c.Close()
	g.mu.Lock()
	opened := g.opened
	if !g.open {
		g.held++
	}
	g.mu.Unlock()
	<-opened
	up, err := net.Dial(g.upNet, g.upAddr)
	if err != nil {
		return
	}
	g.mu.Lock()
	g.conns = append(g.conns, up)
	g.mu.Unlock()
	var pipes sync.WaitGroup
	pipes.Go(func() { _, _ = io.Copy(up, c); _ = up.Close() })
	pipes.Go(func() { _, _ = io.Copy(c, up); _ = c.Close() })
	pipes.Wait()
}

// Close holds new connections until Open.
func (g *gate) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open {
		g.open, g.held, g.opened = false, 0, make(chan struct{})
	}
}

// Open lets the held connections and new ones through.
func (g *gate) Open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.open {
		g.open = true
		close(g.opened)
	}
}

// Held returns how many connections have reached the gate since it last
// closed.
func (g *gate) Held() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held
}

func (g *gate) stop() {
	_ = g.ln.Close()
	g.Open()
	g.mu.Lock()
	for _, c := range g.conns {
		_ = c.Close()
	}
	g.mu.Unlock()
	g.wg.Wait()
}
