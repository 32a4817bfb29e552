package pgqweb

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/pgq-dev/pgq"
)

// chart is the overview's chart of the last hour, drawn by the server as
// SVG: jobs finished per second (bars) and the error rate (a line, errors
// per finished or held job), one bucket a minute.
type chart struct {
	Width, Height        int
	Left, Right, Top, Y0 int // plot area: x from Left to Right, y from Top to Y0 (the baseline)
	Bars                 []bar
	ErrLine              string // polyline points
	ErrDots              []dot
	YTicks               []tick
	ErrTicks             []tick // the error rate's axis, on the right
	XTicks               []tick
	MaxRate              string
	Empty                bool
}

type bar struct {
	X, Y, W, H int
	Title      string
}

type dot struct{ X, Y int }

type tick struct {
	Pos   int
	Label string
}

func newChart(buckets []pgq.ActivityBucket, step time.Duration, now time.Time) chart {
	c := chart{Width: 760, Height: 210, Left: 48, Right: 712, Top: 30, Y0: 180}
	if len(buckets) == 0 {
		c.Empty = true
		return c
	}
	rates := make([]float64, len(buckets))
	peak := 0.0
	for i, b := range buckets {
		span := step.Seconds()
		if i == len(buckets)-1 { // the current, partial bucket
			span = math.Max(1, now.Sub(b.Start).Seconds())
		}
		rates[i] = float64(b.Finished()) / span
		peak = math.Max(peak, rates[i])
	}
	top := niceCeil(peak)
	c.Empty = peak == 0
	plotW := float64(c.Right - c.Left)
	plotH := float64(c.Y0 - c.Top)
	slot := plotW / float64(len(buckets))
	var pts []string
	for i, b := range buckets {
		h := 0
		if top > 0 {
			h = int(math.Round(rates[i] / top * plotH))
		}
		x := c.Left + int(math.Round(float64(i)*slot))
		w := max(1, int(math.Round(slot))-1)
		fin, errs := b.Finished(), b.Errors()
		title := fmt.Sprintf("%s: %.1f jobs/s, %d finished, %d errors", b.Start.UTC().Format("15:04"), rates[i], fin, errs)
		c.Bars = append(c.Bars, bar{X: x, Y: c.Y0 - h, W: w, H: h, Title: title})
		if denom := fin + b.Counts[pgq.StatusFailed]; denom > 0 {
			ratio := float64(errs) / float64(denom)
			y := c.Y0 - int(math.Round(math.Min(ratio, 1)*plotH))
			cx := x + w/2
			pts = append(pts, fmt.Sprintf("%d,%d", cx, y))
			c.ErrDots = append(c.ErrDots, dot{cx, y})
		}
	}
	c.ErrLine = strings.Join(pts, " ")
	for i := 0; i <= 4; i++ {
		v := top * float64(i) / 4
		pos := c.Y0 - int(math.Round(float64(i)/4*plotH))
		c.YTicks = append(c.YTicks, tick{Pos: pos, Label: fmtRate(v)})
		c.ErrTicks = append(c.ErrTicks, tick{Pos: pos, Label: fmt.Sprintf("%d%%", i*25)})
	}
	for i, b := range buckets {
		if b.Start.Minute()%10 == 0 {
			c.XTicks = append(c.XTicks, tick{Pos: c.Left + int(math.Round(float64(i)*slot)), Label: b.Start.UTC().Format("15:04")})
		}
	}
	c.MaxRate = fmtRate(peak)
	return c
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (1 for 0).
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func fmtRate(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v < 10:
		return fmt.Sprintf("%.1f", v)
	}
	return groupDigits(int64(math.Round(v)))
}
