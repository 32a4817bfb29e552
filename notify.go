package pgq

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"

	"github.com/pgq-dev/pgq/internal/sqlname"
)

// Event types on the queue's channel, as PGQueuer names them.
const (
	EventTableChanged = "table_changed_event" // the job table's trigger: insert, delete or truncate
	EventCancellation = "cancellation_event"  // MarkJobAsCancelled: cancel these running jobs
	EventHealthCheck  = "health_check_event"  // a worker's check that its listener works
)

// Event is a notification on the queue's channel (ch_pgqueuer, with the
// prefix), decoded. Fields that do not belong to the event's Type are zero.
type Event struct {
	Channel    string    `json:"channel"`
	Type       string    `json:"type"`
	SentAt     time.Time `json:"sent_at"`
	Operation  string    `json:"operation,omitempty"`  // table_changed_event: insert, update, delete or truncate
	Table      string    `json:"table,omitempty"`      // table_changed_event
	IDs        []JobID   `json:"ids,omitempty"`        // cancellation_event
	ReceivedAt time.Time `json:"received_at,omitzero"` // cancellation_event
	ID         uuid.UUID `json:"id,omitzero"`          // health_check_event
}

// ParseEvent decodes a notification payload. ok is false for a payload
// that is not a JSON object with a known type; listeners ignore those
// rather than fail, as PGQueuer's do. Timestamps that do not parse are left
// zero rather than failing the event.
func ParseEvent(payload string) (ev Event, ok bool) {
	var raw struct {
		Channel    string          `json:"channel"`
		Type       string          `json:"type"`
		SentAt     json.RawMessage `json:"sent_at"`
		Operation  string          `json:"operation"`
		Table      string          `json:"table"`
		IDs        []JobID         `json:"ids"`
		ReceivedAt json.RawMessage `json:"received_at"`
		ID         string          `json:"id"`
	}
	if err := json.Unmarshal([]byte(payload), &raw); err != nil {
		return Event{}, false
	}
	switch raw.Type {
	case EventTableChanged, EventCancellation, EventHealthCheck:
	default:
		return Event{}, false
	}
	ev = Event{Channel: raw.Channel, Type: raw.Type, Operation: raw.Operation, Table: raw.Table, IDs: raw.IDs}
	_ = json.Unmarshal(raw.SentAt, &ev.SentAt)
	_ = json.Unmarshal(raw.ReceivedAt, &ev.ReceivedAt)
	if raw.ID != "" {
		ev.ID, _ = uuid.Parse(raw.ID)
	}
	return ev, true
}

func newCancellationEvent(channel string, ids []JobID) Event {
	now := time.Now().UTC()
	return Event{Channel: channel, Type: EventCancellation, SentAt: now, ReceivedAt: now, IDs: ids}
}

// newTableChangedEvent is the event the job table's trigger sends, for a
// change pgq announces itself.
func newTableChangedEvent(names sqlname.Names, operation string) Event {
	return Event{Channel: names.Channel(), Type: EventTableChanged, SentAt: time.Now().UTC(),
		Operation: operation, Table: names.Name(sqlname.JobTable)}
}

func newHealthCheckEvent(channel string, id uuid.UUID) Event {
	return Event{Channel: channel, Type: EventHealthCheck, SentAt: time.Now().UTC(), ID: id}
}
