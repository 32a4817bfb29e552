package cli

import (
	"bytes"
	"context"
	"io"

	"github.com/pgq-dev/pgq/cmd/pgq/internal/bench"
)

// runBench is `pgq bench`: package bench parses its own arguments and
// prints its own results and its one-line errors. Those start with
// "pgq bench: "; they are rewritten to "pgq: bench: " like every other
// command's.
func runBench(ctx context.Context, args []string, e *env) error {
	stderr := &prefixWriter{w: e.stderr, old: []byte("pgq bench: "), new: []byte("pgq: bench: ")}
	code := bench.Main(ctx, args, e.stdout, stderr)
	stderr.flush()
	if code != 0 {
		return &exitError{code: code}
	}
	return nil
}

// prefixWriter replaces the prefix old with new at the start of each line
// written through it. Other lines pass unchanged; a line is held only
// while it could still turn out to start with old.
type prefixWriter struct {
	w        io.Writer
	old, new []byte
	pending  []byte // the start of a line, a prefix of old so far
	midLine  bool   // the current line's start has been decided
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		if p.midLine {
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				_, err := p.w.Write(b)
				return n, err
			}
			if _, err := p.w.Write(b[:i+1]); err != nil {
				return n, err
			}
			b, p.midLine = b[i+1:], false
			continue
		}
		take := min(len(b), len(p.old)-len(p.pending))
		if i := bytes.IndexByte(b[:take], '\n'); i >= 0 {
			take = i + 1 // a line end decides
		}
		p.pending = append(p.pending, b[:take]...)
		b = b[take:]
		if !bytes.HasPrefix(p.old, p.pending) || len(p.pending) == len(p.old) {
			if err := p.decide(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// decide writes the held start of a line, rewritten if it is old.
func (p *prefixWriter) decide() error {
	out := p.pending
	if bytes.Equal(out, p.old) {
		out = p.new
	}
	// Held bytes end at the latest at a line end; after one, a new line
	// starts.
	p.midLine = out[len(out)-1] != '\n'
	_, err := p.w.Write(out)
	p.pending = p.pending[:0]
	return err
}

// flush writes a held partial line.
func (p *prefixWriter) flush() {
	if len(p.pending) > 0 {
		_, _ = p.w.Write(p.pending)
		p.pending = p.pending[:0]
	}
}
