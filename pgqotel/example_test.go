package pgqotel_test

import (
	"context"
	"database/sql"
	"log"
	"os"

	_ "github.com/jackc/pgx/v5/stdlib"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqotel"
)

// Traces go to an OTLP collector (OTEL_EXPORTER_OTLP_ENDPOINT, by default
// localhost:4318) through the global providers, which pgqotel uses unless
// told otherwise; add a metric reader of your choice to the meter provider.
func Example() {
	ctx := context.Background()
	exporter, err := otlptracehttp.New(ctx)
	if err != nil {
		log.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter))
	defer tp.Shutdown(ctx)
	otel.SetTracerProvider(tp)
	mp := sdkmetric.NewMeterProvider( /* sdkmetric.WithReader(...) */ )
	defer mp.Shutdown(ctx)
	otel.SetMeterProvider(mp)

	db, err := sql.Open("pgx", os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	// The three lines: producer spans, consumer spans, queue depth.
	q := pgq.NewQueries(db, pgq.WithEnqueueHook(pgqotel.EnqueueHook()))
	qm := pgq.NewQueueManager(db, pgq.WithMiddleware(pgqotel.Middleware()))
	reg, err := pgqotel.RegisterQueueMetrics(pgq.NewQueries(db))
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Unregister()

	if err := qm.Entrypoint("email", func(ctx context.Context, job *pgq.Job) error {
		return nil // spans started from ctx are children of the job's span
	}); err != nil {
		log.Fatal(err)
	}
	if _, err := q.Enqueue(ctx, "email", []byte("to: ada@example.com")); err != nil {
		log.Fatal(err)
	}
	if err := qm.Run(ctx, pgq.WithMode(pgq.ModeDrain)); err != nil {
		log.Fatal(err)
	}
}
