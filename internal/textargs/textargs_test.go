package textargs

import (
	"math"
	"reflect"
	"strconv"
	"testing"

	"github.com/lib/pq"
)

func TestLiterals(t *testing.T) {
	args := []any{
		pq.Array([]int64{1, -2, 3}),
		pq.Array([]string{`a"b`, `c\d`, "", "x,y"}),
		pq.Array([]bool{true, false}),
		pq.Array([][]byte{{0xde, 0xad}}),
		pq.Array([]int64(nil)),
		"plain",
		int64(7),
		nil,
	}
	orig := append([]any(nil), args...)
	got := Literals(args)
	want := []any{
		"{1,-2,3}",
		`{"a\"b","c\\d","","x,y"}`,
		"{t,f}",
		`{"\\xdead"}`,
		nil,
		"plain",
		int64(7),
		nil,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Literals:\n got %#v\nwant %#v", got, want)
	}
	if !reflect.DeepEqual(args, orig) {
		t.Errorf("Literals changed its argument slice: %#v", args)
	}
	plain := []any{"a", 1}
	if out := Literals(plain); &out[0] != &plain[0] {
		t.Error("Literals copied arguments that hold no array")
	}
}

// TestInt64Literal checks the literal of int64 arrays against lib/pq's own
// (which the server parses the same way) at the edges of every length.
func TestInt64Literal(t *testing.T) {
	vals := []int64{0, -1, math.MinInt64, math.MaxInt64}
	for p := int64(1); p <= math.MaxInt64/10; p *= 10 {
		vals = append(vals, p-1, p, -p, -p+1, 10*p-1)
	}
	for _, a := range [][]int64{nil, {}, {7}, vals} {
		want, err := pq.Array(a).Value()
		if err != nil {
			t.Fatal(err)
		}
		if got := Literals([]any{pq.Array(a)})[0]; !reflect.DeepEqual(got, want) {
			t.Errorf("%v: literal %#v, lib/pq's %#v", a, got, want)
		}
	}
	for _, v := range vals {
		if got, want := decimalLen(v), len(strconv.FormatInt(v, 10)); got != want {
			t.Errorf("decimalLen(%d) = %d, want %d", v, got, want)
		}
	}
}

// TestInt64LiteralAllocations checks that an int64 array's literal is
// written in one buffer sized to it: with lib/pq's Value, which grows its
// buffer from a guess of two bytes an element and then copies it, a
// finish's 2,000 claim tokens took 12 allocations where this takes 3 (the
// buffer, its boxing and the copy of args).
func TestInt64LiteralAllocations(t *testing.T) {
	tokens := make([]int64, 2000)
	for i := range tokens {
		tokens[i] = int64(1_764_900_000_000_000 + i*37)
	}
	args := []any{pq.Array(tokens)}
	if n := testing.AllocsPerRun(20, func() { Literals(args) }); n > 3 {
		t.Errorf("Literals of 2,000 claim tokens: %.0f allocations, want at most 3", n)
	}
}

// BenchmarkInt64Literal writes the two arrays of a finish of 2,000 jobs
// (ids and 16-digit claim tokens), as Literals does and as lib/pq's Value
// did.
func BenchmarkInt64Literal(b *testing.B) {
	ids, tokens := make([]int64, 2000), make([]int64, 2000)
	for i := range ids {
		ids[i], tokens[i] = int64(1_000_000+i), int64(1_764_900_000_000_000+i*37)
	}
	b.Run("literals", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			Literals([]any{pq.Array(ids), pq.Array(tokens)})
		}
	})
	b.Run("pq", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = pq.Array(ids).Value()
			_, _ = pq.Array(tokens).Value()
		}
	})
}
