package main

import (
	"bytes"
	"context"
	"io"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the error
	}{
		{[]string{"-batch", "0"}, "-batch 0"},
		{[]string{"-loops", "-1"}, "-loops -1"},
		{[]string{"-warmup", "0"}, "-warmup 0"},
		{[]string{"-driver", "mysql"}, `"mysql"`},
		{[]string{"-finish-batch", "-3"}, "-finish-batch -3"},
		{[]string{"-queue", "100"}, "-queue 100"},
		{[]string{"-variants", "as-installed,nope"}, `"nope"`},
		{[]string{"extra"}, `"extra"`},
	} {
		_, err := parseFlags(tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseFlags(%q) = %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
	c, err := parseFlags([]string{"-variants", "no-picked-row, as-installed"}, io.Discard)
	if err != nil || len(c.variants) != 2 || c.variants[0].name != "no-picked-row" {
		t.Errorf("parseFlags(-variants) = %+v, %v", c.variants, err)
	}
	if c.finishBatch != c.batch {
		t.Errorf("-finish-batch defaults to %d, want -batch's %d", c.finishBatch, c.batch)
	}
}

// TestCount runs the tool on a small queue: it must report a whole
// number of instructions a job for each variant asked, in a plausible
// range, the same figure twice for the same variant, and a lower one for
// a variant that drops indexes (the variant's DDL reached the database
// that was counted).
func TestCount(t *testing.T) {
	if _, err := exec.LookPath("valgrind"); err != nil {
		t.Skip("valgrind not found: the instruction count cannot run here")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, []string{"-batch", "100", "-warmup", "6", "-loops", "2", "-queue", "800",
		"-variants", "as-installed,as-installed,no-pgqueuer-indexes"}, &out, &errOut)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, errOut.String())
	}
	rows := regexp.MustCompile(`(?m)^as-installed\s+(\d+)\s`).FindAllStringSubmatch(out.String(), -1)
	if len(rows) != 2 {
		t.Fatalf("want 2 as-installed rows:\n%s", out.String())
	}
	var n [2]float64
	for i, r := range rows {
		n[i], _ = strconv.ParseFloat(r[1], 64)
		if n[i] < 10_000 || n[i] > 10_000_000 {
			t.Errorf("%v instructions a job: outside 10k-10M\n%s", n[i], out.String())
		}
	}
	// Callgrind counts are repeatable; a claim's clock readings differ a
	// little from run to run.
	if d := (n[0] - n[1]) / n[0]; d > 0.01 || d < -0.01 {
		t.Errorf("the same variant twice: %v and %v instructions a job", n[0], n[1])
	}
	m := regexp.MustCompile(`(?m)^no-pgqueuer-indexes\s+(\d+)\s`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no no-pgqueuer-indexes row:\n%s", out.String())
	}
	if fewer, _ := strconv.ParseFloat(m[1], 64); fewer > 0.9*n[0] {
		t.Errorf("six indexes fewer: %v instructions a job against %v as installed, want under 0.9 of it\n%s", fewer, n[0], out.String())
	}
}
