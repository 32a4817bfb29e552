package idruns

import (
	"math"
	"reflect"
	"slices"
	"testing"

	"github.com/pgq-dev/pgq/dbgen"
)

func TestLargest(t *testing.T) {
	for _, c := range []struct {
		name      string
		ids       []int64
		low, high int64
	}{
		{"none", nil, 0, -1},
		{"one", []int64{7}, 7, 7},
		{"dense", []int64{3, 1, 2, 5, 4}, 1, 5},
		{"gap of Gap bridged", []int64{10, 10 + Gap}, 10, 10 + Gap},
		{"gap over Gap cut, first of equals", []int64{11 + Gap, 10}, 10, 10},
		{"unsorted, most in the middle", []int64{100, 1, 50, 51, 52, 2, 101}, 50, 52},
		{"stragglers after a dense batch", []int64{5000, 1, 2, 3, 4, 6, 7, 9000}, 1, 7},
		{"repeated", []int64{4, 4, 90, 4}, 4, 4},
		{"extremes", []int64{math.MaxInt64, math.MinInt64, math.MaxInt64 - 1}, math.MaxInt64 - 1, math.MaxInt64},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := slices.Clone(c.ids)
			low, high := Largest(c.ids)
			if low != c.low || high != c.high {
				t.Errorf("Largest(%v) = %d, %d; want %d, %d", c.ids, low, high, c.low, c.high)
			}
			if !slices.Equal(in, c.ids) {
				t.Errorf("Largest changed its argument: %v, was %v", c.ids, in)
			}
		})
	}
}

// TestLargestAgainstCount checks on many batches that no gap inside the
// run found exceeds Gap, that it cannot be widened, and that no window
// of the batch without such a gap holds more of its ids.
func TestLargestAgainstCount(t *testing.T) {
	for seed := int64(1); seed <= 300; seed++ {
		ids := make([]int64, 1+seed%37)
		x := seed
		for i := range ids {
			x = (x*6364136223846793005 + 1442695040888963407) & math.MaxInt32
			ids[i] = x % (3 * int64(len(ids)) * (1 + seed%5))
		}
		low, high := Largest(ids)
		sorted := slices.Clone(ids)
		slices.Sort(sorted)
		in := func(lo, hi int64) (n int, ok bool) {
			ok = true
			for i, id := range sorted {
				if lo <= id && id <= hi {
					n++
					if i > 0 && sorted[i-1] >= lo && id-sorted[i-1] > Gap {
						ok = false
					}
				}
			}
			return n, ok
		}
		got, ok := in(low, high)
		if !ok || got == 0 || !slices.Contains(sorted, low) || !slices.Contains(sorted, high) {
			t.Fatalf("ids %v: run %d-%d holds %d ids, gaps within Gap %v", ids, low, high, got, ok)
		}
		for i := range sorted {
			for j := i; j < len(sorted); j++ {
				if n, ok := in(sorted[i], sorted[j]); ok && n > got {
					t.Fatalf("ids %v: run %d-%d holds %d, %d-%d holds %d", ids, low, high, got, sorted[i], sorted[j], n)
				}
			}
		}
	}
}

func BenchmarkLargest(b *testing.B) {
	for _, c := range []struct {
		name string
		id   func(i int) int64
	}{
		{"sorted", func(i int) int64 { return int64(1_000_000 + i) }},
		{"shuffled", func(i int) int64 { return int64(1_000_000 + (i*7)%1000) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			ids := make([]int64, 1000)
			for i := range ids {
				ids[i] = c.id(i)
			}
			b.ReportAllocs()
			for b.Loop() {
				Largest(ids)
			}
		})
	}
}

// TestFinish checks that Finish sets the run from the ids and keeps the
// rest of the parameters.
func TestFinish(t *testing.T) {
	in := dbgen.JobsFinishSucceededParams{Ids: []int64{40, 9, 10, 11, 12}, ClaimTokens: []int64{1, 2, 3, 4, 5}, Quiet: true}
	got := Finish(in)
	if got.RunLow != 9 || got.RunHigh != 12 {
		t.Errorf("Finish: run %d-%d, want 9-12", got.RunLow, got.RunHigh)
	}
	got.RunLow, got.RunHigh = in.RunLow, in.RunHigh
	if !reflect.DeepEqual(got, in) {
		t.Errorf("Finish changed more than the run: %+v, want %+v", got, in)
	}
}
