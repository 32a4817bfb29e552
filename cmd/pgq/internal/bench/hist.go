package bench

import (
	"math"
	"math/bits"
	"time"
)

// Histogram layout: values (nanoseconds) below histSub are counted
// exactly; above, each power of two is cut into histSub buckets of equal
// width, so a bucket is at most 1/histSub (1.6 %) of its values wide.
const (
	histSubBits = 6
	histSub     = 1 << histSubBits
	// histBuckets covers values up to 2^45 ns (about 9.8 hours); larger
	// ones land in the last bucket.
	histBuckets = (45 - histSubBits + 1) * histSub
)

// histogram counts durations in log-linear buckets: its size is fixed
// however many durations it counts, so a run of hours keeps its latency
// percentiles in constant memory. Percentiles read from it are within
// 1.6 % of the exact ones; the largest value is kept exactly.
type histogram struct {
	counts [histBuckets]int64
	n      int64
	max    time.Duration
}

// bucketOf returns the bucket of d (negative durations count as 0).
func bucketOf(d time.Duration) int {
	v := uint64(max(d, 0))
	if v < histSub {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits - 1 // v>>shift is in [histSub, 2*histSub)
	i := (shift+1)*histSub + int(v>>shift) - histSub
	return min(i, histBuckets-1)
}

// bucketValue is the middle of bucket i.
func bucketValue(i int) time.Duration {
	if i < histSub {
		return time.Duration(i)
	}
	shift := i/histSub - 1
	lo := uint64(i%histSub+histSub) << shift
	return time.Duration(lo + (uint64(1)<<shift)/2)
}

func (h *histogram) add(d time.Duration) {
	h.counts[bucketOf(d)]++
	h.n++
	h.max = max(h.max, d)
}

// merge adds o's samples to h's.
func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// percentiles reads nearest-rank percentiles, each the middle of the
// bucket that holds it (never above the largest value).
func (h *histogram) percentiles() Percentiles {
	if h.n == 0 {
		return Percentiles{}
	}
	at := func(p float64) time.Duration {
		want := max(1, int64(math.Ceil(p/100*float64(h.n))))
		var seen int64
		for i, c := range h.counts {
			if seen += c; seen >= want {
				return min(bucketValue(i), h.max)
			}
		}
		return h.max
	}
	return Percentiles{P50: ms(at(50)), P90: ms(at(90)), P99: ms(at(99)), Max: ms(h.max)}
}
