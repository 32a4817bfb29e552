package chaos

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pgq-dev/pgq/internal/sqlname"
)

// Slack is how far outside a fault a run may lie and still count as in
// its crash window: the clocks of this program and of the server are
// compared (measured once; equal for a server on the same machine), and a
// claim sent just before a SIGSTOP commits while the process is stopped.
const Slack = 250 * time.Millisecond

// Row is one line of the report: the jobs whose life (acknowledged until
// finished) overlapped a fault of its kind's affected window; "none" for
// jobs that met no fault, "all" for every job.
type Row struct {
	Kind      string `json:"kind"`
	Faults    int    `json:"faults"`
	Acked     int    `json:"acked"`
	Finished  int    `json:"finished"`
	Lost      int    `json:"lost"`
	Stuck     int    `json:"stuck"`
	Repeats   int    `json:"repeats"`   // runs after a job's first run
	Explained int    `json:"explained"` // of which in a crash window
}

// Repeat is a job that ran more than once.
type Repeat struct {
	Job       int64     `json:"job"`
	Pids      []int     `json:"pids"`
	Runs      []string  `json:"runs"` // ledger times
	FirstPick time.Time `json:"first_pick"`
}

// Recovery is how long the jobs took to flow again after a server restart.
type Recovery struct {
	Kind    Kind    `json:"kind"`
	Down    float64 `json:"down_seconds"`    // until the server accepted connections
	Flowing float64 `json:"flowing_seconds"` // until the first handler committed after that
}

// Report is the outcome of a chaos run.
type Report struct {
	Run       string  `json:"run"`
	Seed      uint64  `json:"seed"`
	Workers   int     `json:"workers"`
	Producers int     `json:"producers"`
	Heartbeat float64 `json:"heartbeat_timeout_seconds"`
	Seconds   float64 `json:"duration_seconds"`
	Drained   bool    `json:"drained"`
	// CompleteTx: handlers completed their jobs in their transaction.
	CompleteTx bool `json:"complete_tx"`

	Rows           []Row      `json:"by_fault"`
	Successful     int        `json:"successful"`
	Canceled       int        `json:"canceled"`
	Exception      int        `json:"exception"`
	LeftQueued     int        `json:"left_queued"`
	CanceledAsked  int        `json:"cancel_requests"`
	BadCancels     int        `json:"canceled_without_cancel"`
	DoubleOutcomes int        `json:"outcome_written_twice"`
	Runs           int        `json:"runs"`
	Throughput     float64    `json:"throughput"`                // runs committed per second over the whole run
	DuringFaults   float64    `json:"throughput_during_faults"`  // per second, in seconds affected by a fault
	WithoutFaults  float64    `json:"throughput_without_faults"` // per second, in the other seconds
	Ratio          float64    `json:"ratio"`                     // DuringFaults / WithoutFaults
	Recoveries     []Recovery `json:"recoveries,omitempty"`
	Unexplained    []Repeat   `json:"unexplained_repeats,omitempty"` // each job once
	Faults         []Fault    `json:"faults"`
	Failures       []string   `json:"failures,omitempty"`
}

// OK reports whether the run found nothing wrong.
func (r *Report) OK() bool { return len(r.Failures) == 0 }

// affected is the part of the run a fault slows down: a lasting fault
// until its end, plus a heartbeat timeout for kill, stop, restart and crash
// (their jobs are released only then); a terminate for one second after.
func (s *server) affected(f Fault) (time.Time, time.Time) {
	switch f.Kind {
	case Terminate, Cancel:
		return f.Start, f.End.Add(time.Second)
	}
	return f.Start, f.End.Add(s.cfg.HeartbeatTimeout)
}

func arrayLit(v []int64) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, x := range v {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(x, 10))
	}
	b.WriteByte('}')
	return b.String()
}

// check compares the ledger, the log and the job table with what the
// producers acknowledged.
func (s *server) check(ctx context.Context, began, ended time.Time, drained bool) (*Report, error) {
	s.mu.Lock()
	faults := slices.Clone(s.faults)
	acked := slices.Clone(s.acked)
	canceled := make([]int64, 0, len(s.canceled))
	for id := range s.canceled {
		canceled = append(canceled, id)
	}
	s.mu.Unlock()
	sort.Slice(faults, func(i, j int) bool { return faults[i].Start.Before(faults[j].Start) })
	r := &Report{
		Run: s.runID, Seed: s.cfg.Seed, Workers: s.cfg.Workers, Producers: s.cfg.Producers,
		Heartbeat: s.cfg.HeartbeatTimeout.Seconds(), Seconds: ended.Sub(began).Seconds(),
		Drained: drained, Faults: faults, CanceledAsked: len(canceled), CompleteTx: s.cfg.CompleteTx,
	}
	accepted := s.names.Qualified("pgq_chaos_acked")
	const chunk = 20000
	for i := 0; i < len(acked); i += chunk {
		part := acked[i:min(i+chunk, len(acked))]
		ids, ats := make([]int64, len(part)), make([]int64, len(part))
		for j, a := range part {
			ids[j], ats[j] = a.id, a.at.UnixMicro()
		}
		if _, err := s.db.ExecContext(ctx, "INSERT INTO "+accepted+` (run, id, at)
			SELECT $1, i, to_timestamp(a / 1e6) FROM unnest($2::bigint[], $3::bigint[]) AS u(i, a)`,
			s.runID, arrayLit(ids), arrayLit(ats)); err != nil {
			return nil, fmt.Errorf("recording the acknowledged jobs: %w", err)
		}
	}
	if _, err := s.db.ExecContext(ctx, "UPDATE "+accepted+" SET canceled = true WHERE run = $1 AND id = ANY($2::bigint[])",
		s.runID, arrayLit(canceled)); err != nil {
		return nil, fmt.Errorf("recording the canceled jobs: %w", err)
	}

	rows := map[string]*Row{}
	row := func(k string) *Row {
		if rows[k] == nil {
			rows[k] = &Row{Kind: k}
		}
		return rows[k]
	}
	for _, f := range faults {
		row(string(f.Kind)).Faults++
		row("all").Faults++
	}
	// kindsDuring lists the kinds of the faults whose affected window
	// meets [from, to].
	longest := time.Duration(0)
	for _, f := range faults {
		a, b := s.affected(f)
		longest = max(longest, b.Sub(a))
	}
	kindsDuring := func(from, to time.Time) []string {
		var ks []string
		i := sort.Search(len(faults), func(i int) bool { return !faults[i].Start.Before(from.Add(-longest)) })
		for ; i < len(faults) && !faults[i].Start.After(to); i++ {
			a, b := s.affected(faults[i])
			if !b.Before(from) && !a.After(to) && !slices.Contains(ks, string(faults[i].Kind)) {
				ks = append(ks, string(faults[i].Kind))
			}
		}
		if len(ks) == 0 {
			ks = []string{"none"}
		}
		return append(ks, "all")
	}

	// Every acknowledged job: its outcome in the log, and whether it is
	// still in the job table.
	minID := int64(0)
	if len(acked) > 0 {
		minID = acked[0].id
		for _, a := range acked {
			minID = min(minID, a.id)
		}
	}
	jobs, logt := s.names.Qualified(sqlname.JobTable), s.names.Qualified(sqlname.LogTable)
	res, err := s.db.QueryContext(ctx, `WITH l AS (
			SELECT job_id,
				count(*) FILTER (WHERE status = 'successful') AS ok,
				count(*) FILTER (WHERE status = 'canceled') AS cx,
				count(*) FILTER (WHERE status = 'exception') AS ex,
				max(created) AS last
			FROM `+logt+` WHERE job_id >= $2 GROUP BY job_id)
		SELECT a.id, a.at, a.canceled, coalesce(l.ok, 0), coalesce(l.cx, 0), coalesce(l.ex, 0),
			coalesce(l.last, a.at), coalesce(j.status::text, '')
		FROM `+accepted+` AS a LEFT JOIN l ON l.job_id = a.id LEFT JOIN `+jobs+` AS j ON j.id = a.id
		WHERE a.run = $1`, s.runID, minID)
	if err != nil {
		return nil, fmt.Errorf("reading the outcomes: %w", err)
	}
	var lostIDs, badIDs []int64
	for res.Next() {
		var id int64
		var at, last time.Time
		var wasCanceled bool
		var ok, cx, ex int
		var status string
		if err := res.Scan(&id, &at, &wasCanceled, &ok, &cx, &ex, &last, &status); err != nil {
			_ = res.Close()
			return nil, err
		}
		end := last
		if status != "" || ok+cx+ex == 0 {
			end = ended
		}
		ks := kindsDuring(at, end)
		for _, k := range ks {
			row(k).Acked++
		}
		r.Successful += ok
		r.Canceled += cx
		r.Exception += ex
		switch {
		case status == "queued":
			r.LeftQueued++
			for _, k := range ks {
				row(k).Stuck++
			}
		case status != "":
			for _, k := range ks {
				row(k).Stuck++
			}
		case ok+cx+ex == 0:
			for _, k := range ks {
				row(k).Lost++
			}
			lostIDs = append(lostIDs, id)
		default:
			for _, k := range ks {
				row(k).Finished++
			}
		}
		if ok+cx+ex > 1 {
			r.DoubleOutcomes++
		}
		if cx > 0 && !wasCanceled {
			r.BadCancels++
			badIDs = append(badIDs, id)
		}
	}
	if err := res.Err(); err != nil {
		return nil, err
	}
	_ = res.Close()

	// Repeats: jobs with more than one ledger row.
	res, err = s.db.QueryContext(ctx, `SELECT r.job_id,
			string_agg(r.pid || ':' || (extract(epoch FROM r.at) * 1e6)::bigint, ',' ORDER BY r.at),
			coalesce((SELECT min(l.created) FROM `+logt+` AS l WHERE l.job_id = r.job_id AND l.status = 'picked'), min(r.at))
		FROM `+s.ledger+` AS r WHERE r.run = $1 GROUP BY r.job_id HAVING count(*) > 1`, s.runID)
	if err != nil {
		return nil, fmt.Errorf("reading the ledger: %w", err)
	}
	for res.Next() {
		var rep Repeat
		var runs string
		if err := res.Scan(&rep.Job, &runs, &rep.FirstPick); err != nil {
			_ = res.Close()
			return nil, err
		}
		var ats []time.Time
		for run := range strings.SplitSeq(runs, ",") {
			p, us, _ := strings.Cut(run, ":")
			pid, _ := strconv.Atoi(p)
			u, _ := strconv.ParseInt(us, 10, 64)
			rep.Pids = append(rep.Pids, pid)
			ats = append(ats, time.UnixMicro(u))
			rep.Runs = append(rep.Runs, time.UnixMicro(u).UTC().Format("15:04:05.000000"))
		}
		from := rep.FirstPick
		if ats[0].Before(from) {
			from = ats[0]
		}
		listed := false // in r.Unexplained
		for k := 1; k < len(ats); k++ {
			by := s.crashWindow(faults, rep.Pids[:k+1], from.Add(-Slack), ats[k].Add(Slack))
			for _, kk := range kindsDuring(from, ats[k]) {
				row(kk).Repeats++
				if by != "" {
					row(kk).Explained++
				}
			}
			if by == "" && !listed {
				listed = true
				r.Unexplained = append(r.Unexplained, rep)
			}
		}
	}
	if err := res.Err(); err != nil {
		return nil, err
	}
	_ = res.Close()

	// Throughput: ledger rows per second, in seconds affected by a fault
	// and in the others.
	res, err = s.db.QueryContext(ctx, `SELECT floor(extract(epoch FROM at))::bigint, count(*) FROM `+s.ledger+`
		WHERE run = $1 AND at >= $2 AND at < $3 GROUP BY 1`, s.runID, began, ended)
	if err != nil {
		return nil, err
	}
	perSec := map[int64]int{}
	for res.Next() {
		var sec int64
		var n int
		if err := res.Scan(&sec, &n); err != nil {
			_ = res.Close()
			return nil, err
		}
		perSec[sec] = n
		r.Runs += n
	}
	_ = res.Close()
	var during, without, nd, nw int
	for sec := began.Unix() + 1; sec < ended.Unix(); sec++ { // whole seconds only
		t := time.Unix(sec, 0)
		hit := false
		for _, f := range faults {
			if f.Kind == Cancel {
				continue
			}
			a, b := s.affected(f)
			if !b.Before(t) && a.Before(t.Add(time.Second)) {
				hit = true
				break
			}
		}
		if hit {
			during += perSec[sec]
			nd++
		} else {
			without += perSec[sec]
			nw++
		}
	}
	if r.Seconds > 0 {
		r.Throughput = float64(r.Runs) / r.Seconds
	}
	if nd > 0 {
		r.DuringFaults = float64(during) / float64(nd)
	}
	if nw > 0 {
		r.WithoutFaults = float64(without) / float64(nw)
		r.Ratio = r.DuringFaults / r.WithoutFaults
	}

	// Recovery after each server restart.
	for _, f := range faults {
		if (f.Kind != Restart && f.Kind != Crash) || f.Err != "" {
			continue
		}
		var first *time.Time
		if err := s.db.QueryRowContext(ctx, "SELECT min(at) FROM "+s.ledger+" WHERE run = $1 AND at >= $2",
			s.runID, f.End.Add(-Slack)).Scan(&first); err != nil {
			return nil, err
		}
		rec := Recovery{Kind: f.Kind, Down: f.End.Sub(f.Start).Seconds(), Flowing: -1}
		if first != nil {
			rec.Flowing = first.Sub(f.Start).Seconds()
		}
		r.Recoveries = append(r.Recoveries, rec)
	}

	order := append([]string{"none"}, func() []string {
		var ks []string
		for _, k := range Kinds {
			ks = append(ks, string(k))
		}
		return ks
	}()...)
	for _, k := range append(order, "all") {
		if rows[k] != nil {
			r.Rows = append(r.Rows, *rows[k])
		}
	}
	all := row("all")
	if all.Lost > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d acknowledged jobs lost (e.g. %v)", all.Lost, lostIDs[:min(5, len(lostIDs))]))
	}
	if all.Stuck > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d jobs stuck (%d of them queued) after the rescue period", all.Stuck, r.LeftQueued))
	}
	if s.cfg.CompleteTx && all.Repeats > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d repeated runs with CompleteTx (want none, crash or not)", all.Repeats))
	} else if all.Repeats > all.Explained {
		r.Failures = append(r.Failures, fmt.Sprintf("%d repeated runs outside any crash window", all.Repeats-all.Explained))
	}
	if r.BadCancels > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d jobs ended canceled though nobody canceled them (e.g. %v)", r.BadCancels, badIDs[:min(5, len(badIDs))]))
	}
	if r.DoubleOutcomes > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d jobs with more than one outcome logged", r.DoubleOutcomes))
	}
	if all.Acked == 0 {
		r.Failures = append(r.Failures, "no job was acknowledged")
	}
	return r, nil
}

// crashWindow returns the kind of a fault that explains a repeated run: a
// kill, stop or terminate of one of the processes that ran the job, or a
// server restart, between from (the job's first claim, less Slack) and to
// (the repeated run, plus Slack); "" when there is none.
func (s *server) crashWindow(faults []Fault, pids []int, from, to time.Time) string {
	for _, f := range faults {
		if f.Start.After(to) {
			break
		}
		if f.End.Before(from) || f.Err != "" && f.Kind != Terminate {
			continue
		}
		switch f.Kind {
		case Restart, Crash:
			return string(f.Kind)
		case Kill, Stop, Terminate:
			for _, p := range f.Pids {
				if p != 0 && slices.Contains(pids, p) {
					return string(f.Kind)
				}
			}
		}
	}
	return ""
}
