package notifier

import (
	"testing"

	"github.com/lib/pq"
)

// TestWithAppName: the application_name added to a lib/pq DSN is the one
// lib/pq connects with, in both DSN forms, over a value already there.
func TestWithAppName(t *testing.T) {
	for _, dsn := range []string{
		"host=/tmp dbname=app",
		"host=/tmp dbname=app application_name=mine",
		"postgres://u@localhost/app?sslmode=disable",
		"postgresql://u@localhost/app?application_name=mine",
	} {
		got := withAppName(dsn, "pgq worker it's")
		cfg, err := pq.NewConfig(got)
		if err != nil {
			t.Errorf("withAppName(%q) = %q: %v", dsn, got, err)
			continue
		}
		if cfg.ApplicationName != "pgq worker it's" {
			t.Errorf("withAppName(%q) = %q: application_name %q", dsn, got, cfg.ApplicationName)
		}
	}
	if got := withAppName("host=/tmp", ""); got != "host=/tmp" {
		t.Errorf("withAppName with no name = %q", got)
	}
}
