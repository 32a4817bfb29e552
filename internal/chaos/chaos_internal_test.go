package chaos

import (
	"testing"
	"time"
)

// TestCrashWindow checks the definition of docs/chaos.md: a repeat is
// explained by a kill, stop or terminate of a process that ran the job, or
// a server restart, overlapping [first claim - Slack, repeat + Slack].
func TestCrashWindow(t *testing.T) {
	s := &server{cfg: Config{HeartbeatTimeout: 3 * time.Second}}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// The job: first claimed at 0, run by 10 at 100 ms, again by 20 at 4000 ms.
	pids, from, to := []int{10, 20}, at(0).Add(-Slack), at(4000).Add(Slack)
	for _, tc := range []struct {
		name  string
		fault Fault
		want  string
	}{
		{"kill of the first runner", Fault{Kind: Kill, Start: at(500), End: at(500), Pids: []int{10}}, "kill"},
		{"kill of another process", Fault{Kind: Kill, Start: at(500), End: at(500), Pids: []int{30}}, ""},
		{"kill after the repeat", Fault{Kind: Kill, Start: at(4300), End: at(4300), Pids: []int{10}}, ""},
		{"kill just after the repeat, within the slack", Fault{Kind: Kill, Start: at(4200), End: at(4200), Pids: []int{10}}, "kill"},
		{"stop of the second runner spanning the claim", Fault{Kind: Stop, Start: at(-3000), End: at(100), Pids: []int{20}}, "stop"},
		{"stop that ended before the claim", Fault{Kind: Stop, Start: at(-6000), End: at(-300), Pids: []int{20}}, ""},
		{"terminate of a runner's backend", Fault{Kind: Terminate, Start: at(90), End: at(90), Pids: []int{10}, Target: "handler"}, "terminate"},
		{"terminate of a producer's backend", Fault{Kind: Terminate, Start: at(90), End: at(90), Pids: []int{0}, Target: "producer"}, ""},
		{"server crash", Fault{Kind: Crash, Start: at(1000), End: at(2500)}, "crash"},
		{"failed restart", Fault{Kind: Restart, Start: at(1000), End: at(1000), Err: "x"}, ""},
		{"cancel", Fault{Kind: Cancel, Start: at(50), End: at(50), Jobs: []int64{1}}, ""},
	} {
		if got := s.crashWindow([]Fault{tc.fault}, pids, from, to); got != tc.want {
			t.Errorf("%s: explained by %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct{ app, query, want string }{
		{"pgq worker 0b1c2d3e-0000-4000-8000-000000000000 ch_pgqueuer", "LISTEN ch_pgqueuer", "listener"},
		{"pgq claims 0b1c2d3e-0000-4000-8000-000000000000 ch_pgqueuer", "-- name: JobsClaim :many\nWITH ...", "claim"},
		{producerApp, "-- name: JobsEnqueue :many\nINSERT ...", "producer"},
		{workerApp + "12", "-- name: JobsClaim :many\nWITH ...", "claim"},
		{workerApp + "12", "-- name: JobsFinish :many\nWITH ...", "outcome"},
		{workerApp + "12", "-- name: JobsHeartbeat :many\nUPDATE ...", "heartbeat"},
		{workerApp + "12", "INSERT INTO pgq_chaos_ledger (run, job_id, attempt, pid) VALUES ($1, $2, $3, $4)", "handler"},
		{workerApp + "12", "commit", "handler"},
		{workerApp + "12", "SELECT 1", "other"},
	} {
		if got := classify(tc.app, tc.query); got != tc.want {
			t.Errorf("classify(%q, %q) = %q, want %q", tc.app, tc.query, got, tc.want)
		}
	}
}
