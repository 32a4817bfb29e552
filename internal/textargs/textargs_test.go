package textargs

import (
	"reflect"
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
