package pgq_test

import (
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/pgq-dev/pgq"
)

// TestParseEvent: the payloads of PGQueuer's trigger and of both queues'
// cancellations and health checks parse; garbage does not, without a
// database.
func TestParseEvent(t *testing.T) {
	t.Parallel()
	id := uuid.MustParse("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
	cases := []struct {
		name    string
		payload string
		ok      bool
		want    pgq.Event
	}{
		{"trigger insert", `{"channel":"ch_pgqueuer","operation":"insert","sent_at":"2024-05-01T10:00:00.123456+00:00","table":"pgqueuer","type":"table_changed_event"}`,
			true, pgq.Event{Channel: "ch_pgqueuer", Type: pgq.EventTableChanged, Operation: "insert", Table: "pgqueuer"}},
		{"cancellation", `{"channel":"ch_pgqueuer","type":"cancellation_event","ids":[1,2,3],"sent_at":"2024-05-01T10:00:00Z"}`,
			true, pgq.Event{Channel: "ch_pgqueuer", Type: pgq.EventCancellation, IDs: []pgq.JobID{1, 2, 3}}},
		{"health check", `{"channel":"ch_pgqueuer","type":"health_check_event","id":"` + id.String() + `","sent_at":"2024-05-01T10:00:00Z"}`,
			true, pgq.Event{Channel: "ch_pgqueuer", Type: pgq.EventHealthCheck, ID: id}},
		{"health check, bad id", `{"type":"health_check_event","id":"not-a-uuid"}`,
			true, pgq.Event{Type: pgq.EventHealthCheck}},
		{"bad time is ignored", `{"type":"table_changed_event","operation":"delete","sent_at":"yesterday"}`,
			true, pgq.Event{Type: pgq.EventTableChanged, Operation: "delete"}},
		{"unknown type", `{"type":"requests_per_second_event"}`, false, pgq.Event{}},
		{"no type", `{"channel":"ch_pgqueuer"}`, false, pgq.Event{}},
		{"ids of the wrong type", `{"type":"cancellation_event","ids":["a"]}`, false, pgq.Event{}},
		{"not JSON", `hello`, false, pgq.Event{}},
		{"empty", ``, false, pgq.Event{}},
		{"JSON null", `null`, false, pgq.Event{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev, ok := pgq.ParseEvent(c.payload)
			if ok != c.ok {
				t.Fatalf("ok = %v, want %v", ok, c.ok)
			}
			if ev.Channel != c.want.Channel || ev.Type != c.want.Type || ev.Operation != c.want.Operation ||
				ev.Table != c.want.Table || ev.ID != c.want.ID || !slices.Equal(ev.IDs, c.want.IDs) {
				t.Errorf("got %+v, want %+v", ev, c.want)
			}
		})
	}
}
