package pgq_test

import (
	"context"
	"log"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"github.com/pgq-dev/pgq/internal/chaos"
	"github.com/pgq-dev/pgq/pgqtest"
)

func TestMain(m *testing.M) {
	// The crash tests start this test binary again as a worker process.
	if os.Getenv(workerEnvDSN) != "" {
		os.Exit(workerProcess())
	}
	// TestChaosNothingLost starts it as a chaos worker.
	if os.Getenv(chaos.EnvWorker) != "" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		code := chaos.WorkerMain(ctx, os.Getenv, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	pgqtest.Main(m)
}

// testDSN is the DSN of the server the tests run against (a private one
// that pgqtest starts on first use, unless PGQ_TEST_DSN names one): your
// program uses its own database's.
func testDSN() string {
	dsn, err := pgqtest.DSN()
	if err != nil {
		log.Fatal(err)
	}
	return dsn
}
