package pgq_test

import (
	"os"
	"testing"

	"github.com/pgq-dev/pgq/pgqtest"
)

func TestMain(m *testing.M) {
	// The crash tests start this test binary again as a worker process.
	if os.Getenv(workerEnvDSN) != "" {
		os.Exit(workerProcess())
	}
	pgqtest.Main(m)
}
