package pgq

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// The fuzz targets below run their seed corpus (testdata/fuzz) with every
// go test; TestFuzzTargetsBriefly (fuzz_run_test.go) runs each for a few
// seconds.

// FuzzParseCron: no expression panics or hangs; an accepted one is stored
// in a normal form that parses to itself, and its next run is after now.
func FuzzParseCron(f *testing.F) {
	now := time.Date(2026, 11, 30, 5, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, expr string) {
		if len(expr) > 1000 {
			return
		}
		c, err := ParseCron(expr)
		if err != nil {
			if c != nil {
				t.Fatalf("ParseCron(%q) returned a Cron and an error", expr)
			}
			if !strings.Contains(err.Error(), "cron expression") {
				t.Fatalf("ParseCron(%q): the error does not name the expression: %v", expr, err)
			}
			return
		}
		again, err := ParseCron(c.String())
		if err != nil {
			t.Fatalf("ParseCron(%q) stores %q, which does not parse: %v", expr, c.String(), err)
		}
		if again.String() != c.String() {
			t.Fatalf("ParseCron(%q) stores %q, which is stored as %q", expr, c.String(), again.String())
		}
		next := c.Next(now)
		if next.IsZero() || !next.After(now) || next.Location() != time.UTC {
			t.Fatalf("ParseCron(%q).Next(%v) = %v, want a UTC time after it", expr, now, next)
		}
		if n2 := again.Next(now); !n2.Equal(next) {
			t.Fatalf("%q runs next at %v, its stored form %q at %v", expr, next, c.String(), n2)
		}
	})
}

// FuzzParseEvent: no payload panics; an accepted one has a known type and
// survives encoding and decoding unchanged.
func FuzzParseEvent(f *testing.F) {
	f.Fuzz(func(t *testing.T, payload string) {
		ev, ok := ParseEvent(payload)
		if !ok {
			if ev.Type != "" || ev.IDs != nil {
				t.Fatalf("ParseEvent(%q) = %+v, not ok, want the zero Event", payload, ev)
			}
			return
		}
		switch ev.Type {
		case EventTableChanged, EventCancellation, EventHealthCheck:
		default:
			t.Fatalf("ParseEvent(%q): accepted unknown type %q", payload, ev.Type)
		}
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("ParseEvent(%q) = %+v, which does not encode: %v", payload, ev, err)
		}
		back, ok := ParseEvent(string(b))
		if !ok || back.Type != ev.Type || back.Channel != ev.Channel || back.Operation != ev.Operation ||
			back.Table != ev.Table || !slices.Equal(back.IDs, ev.IDs) || back.ID != ev.ID ||
			!back.SentAt.Equal(ev.SentAt) || !back.ReceivedAt.Equal(ev.ReceivedAt) {
			t.Fatalf("ParseEvent(%q) = %+v; encoded as %s it decodes to %+v (ok %v)", payload, ev, b, back, ok)
		}
	})
}

// FuzzDecodeHeaders: no headers column panics the decoding; headers pgq
// wrote (a JSON object of strings) come back as they were.
func FuzzDecodeHeaders(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw []byte) {
		m := decodeHeaders(raw)
		if len(raw) > 0 && string(raw) != "null" && m == nil {
			t.Fatalf("decodeHeaders(%q) = nil, want the column kept", raw)
		}
		if !utf8.Valid(raw) {
			return
		}
		var strs map[string]string
		if json.Unmarshal(raw, &strs) != nil || strs == nil {
			return
		}
		b, err := json.Marshal(strs)
		if err != nil {
			t.Fatal(err)
		}
		if got := decodeHeaders(b); !maps.Equal(got, strs) {
			t.Fatalf("headers %s decode to %q, want %q", b, got, strs)
		}
	})
}
