package bench

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// statementLogSettings make the throwaway server log the duration of every
// statement, each line starting with the server process id, for
// --statement-times.
var statementLogSettings = map[string]string{
	"log_min_duration_statement": "0",
	"log_line_prefix":            "%p|",
}

// StatementTime is the time the server spent on one of pgq's statements,
// read from its log: for each call, the parse, bind and execute steps the
// server logged for it, summed (commit excluded). Statements are named by
// the "-- name:" line sqlc puts at their head; statements without one (the
// handlers', the benchmark's own) are left out. The last one, named
// AllStatements, is every call of the others together.
type StatementTime struct {
	Name  string `json:"name"`
	Calls int    `json:"calls"`
	Percentiles
}

// StatementTimes is embedded in the results of the benchmarks that can
// report --statement-times.
type StatementTimes struct {
	Statements []StatementTime `json:"statements,omitempty"`
}

// AllStatements names the StatementTime of every call of pgq's statements
// together.
const AllStatements = "(all)"

var (
	// 1234|LOG:  duration: 0.123 ms  execute stmtcache_1: -- name: JobsClaim :many
	durationLine = regexp.MustCompile(`^(\d+)\|LOG:  duration: ([0-9.]+) ms  (parse|bind|execute|statement)[^:]*: (.*)$`)
	sqlcName     = regexp.MustCompile(`-- name: (\w+)`)
)

// readStatementTimes reads the server log at path from offset on and
// returns the times of pgq's statements, by name.
func readStatementTimes(path string, offset int64) ([]StatementTime, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		return nil, err
	}
	type pending struct {
		name string
		d    time.Duration
	}
	open := map[string]pending{} // by server process: parse/bind so far
	calls := map[string][]time.Duration{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		m := durationLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		pid, step, text := m[1], m[3], m[4]
		msec, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			return nil, fmt.Errorf("bad duration %q in %s", m[2], path)
		}
		d := time.Duration(msec * float64(time.Millisecond))
		n := sqlcName.FindStringSubmatch(text)
		if n == nil {
			delete(open, pid)
			continue
		}
		p := open[pid]
		if p.name != n[1] {
			p = pending{name: n[1]}
		}
		p.d += d
		if step == "parse" || step == "bind" {
			open[pid] = p
			continue
		}
		delete(open, pid)
		calls[p.name] = append(calls[p.name], p.d)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	out := make([]StatementTime, 0, len(calls)+1)
	var all []time.Duration
	for _, name := range slices.Sorted(maps.Keys(calls)) {
		out = append(out, StatementTime{Name: name, Calls: len(calls[name]), Percentiles: percentiles(calls[name])})
		all = append(all, calls[name]...)
	}
	if len(all) > 0 {
		out = append(out, StatementTime{Name: AllStatements, Calls: len(all), Percentiles: percentiles(all)})
	}
	return out, nil
}

var (
	statementTimesType = reflect.TypeFor[StatementTimes]()
	statementsType     = reflect.TypeFor[[]StatementTime]()
)

// statementsBlock renders statement times as a table of their own.
func statementsBlock(key string, times []StatementTime) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "name\tcalls\tp50_ms\tp90_ms\tp99_ms\tmax_ms\t\n")
	for _, t := range times {
		fmt.Fprintf(tw, "%s\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t\n", t.Name, t.Calls, t.P50, t.P90, t.P99, t.Max)
	}
	tw.Flush()
	return fmt.Sprintf("%s (server time, from its log):\n    %s\n", key,
		strings.ReplaceAll(strings.TrimRight(b.String(), "\n"), "\n", "\n    "))
}

// setStatementTimes stores times in the StatementTimes a result embeds, if
// it has one.
func setStatementTimes(result any, times []StatementTime) {
	v := reflect.ValueOf(result)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return
	}
	for i := range v.Elem().NumField() {
		if f := v.Elem().Field(i); f.Type() == statementTimesType {
			f.Set(reflect.ValueOf(StatementTimes{Statements: times}))
			return
		}
	}
}

// fileSize is the size of the file at path, 0 when it cannot be read.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
