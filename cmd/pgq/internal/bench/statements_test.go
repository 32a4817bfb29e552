package bench

import (
	"os"
	"path/filepath"
	"testing"
)

// A server log as the throwaway server writes it with
// statementLogSettings: parse, bind and execute of one call are summed per
// server process, steps of other processes interleave, and statements
// without sqlc's name line are left out.
func TestReadStatementTimes(t *testing.T) {
	log := `11|LOG:  duration: 0.500 ms  parse stmtcache_1: -- name: JobsClaim :many
	WITH next AS (
11|LOG:  duration: 0.250 ms  bind stmtcache_1: -- name: JobsClaim :many
	WITH next AS (
22|LOG:  duration: 3.000 ms  execute <unnamed>: INSERT INTO ledger VALUES ($1)
22|DETAIL:  parameters: $1 = '7'
11|LOG:  duration: 2.250 ms  execute stmtcache_1: -- name: JobsClaim :many
	WITH next AS (
22|LOG:  duration: 1.000 ms  bind <unnamed>: -- name: JobsFinish :exec
22|LOG:  duration: 4.000 ms  execute <unnamed>: -- name: JobsFinish :exec
11|LOG:  duration: 1.000 ms  execute stmtcache_1: -- name: JobsClaim :many
33|LOG:  duration: 9.000 ms  statement: -- name: Notify :exec
33|LOG:  duration: 0.100 ms  statement: BEGIN
`
	path := filepath.Join(t.TempDir(), "server.log")
	if err := os.WriteFile(path, []byte("ignored line before the offset\n"+log), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readStatementTimes(path, int64(len("ignored line before the offset\n")))
	if err != nil {
		t.Fatal(err)
	}
	want := []StatementTime{
		{Name: "JobsClaim", Calls: 2, Percentiles: Percentiles{P50: 1, P90: 3, P99: 3, Max: 3}},
		{Name: "JobsFinish", Calls: 1, Percentiles: Percentiles{P50: 5, P90: 5, P99: 5, Max: 5}},
		{Name: "Notify", Calls: 1, Percentiles: Percentiles{P50: 9, P90: 9, P99: 9, Max: 9}},
		{Name: AllStatements, Calls: 4, Percentiles: Percentiles{P50: 3, P90: 9, P99: 9, Max: 9}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("statement %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}
