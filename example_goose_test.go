package pgq_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"testing/fstest"

	"github.com/pressly/goose/v3"

	"github.com/pgq-dev/pgq"
)

// An app's goose pipeline runs its own migrations, recorded in goose's
// default goose_db_version, and pgq's, recorded in pgqueuer_pgq_version:
// both sets are numbered from 00001, so they need a table each.
func ExampleGooseProvider() {
	ctx := context.Background()
	db, err := sql.Open("pgx", os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	var appMigrations = fstest.MapFS{ // your embed.FS of db/migrations
		"00001_users.sql": {Data: []byte("-- +goose Up\nCREATE TABLE users (id bigint PRIMARY KEY);\n")},
	}
	app, err := goose.NewProvider(goose.DialectPostgres, db, appMigrations)
	if err != nil {
		log.Fatal(err)
	}
	queue, err := pgq.GooseProvider(db)
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range []*goose.Provider{app, queue} {
		if _, err := p.Up(ctx); err != nil {
			log.Fatal(err)
		}
	}
}

// With a prefix or a schema, GooseProviderFor rewrites the migrations and
// names the version table after them; it creates the schema.
func ExampleGooseProviderFor() {
	ctx := context.Background()
	db, err := sql.Open("pgx", testDSN())
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	naming := []pgq.NamingOption{pgq.WithPrefix("app_"), pgq.WithSchema("example_goose")}

	p, err := pgq.GooseProviderFor(db, naming)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := p.Up(ctx); err != nil {
		log.Fatal(err)
	}
	table, err := pgq.MigrationsTableFor(naming...)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("versions recorded in", table)
	fmt.Println("verify:", pgq.Verify(ctx, db, naming[0], naming[1]))

	if err := pgq.Uninstall(ctx, db, naming[0], naming[1]); err != nil {
		log.Fatal(err)
	}
	// Output:
	// versions recorded in example_goose.app_pgqueuer_pgq_version
	// verify: <nil>
}
