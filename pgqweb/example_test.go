package pgqweb_test

import (
	"database/sql"
	"log"
	"net/http"

	"github.com/pgq-dev/pgq/pgqweb"
)

// The dashboard in your own server, under /queue/, behind your own auth
// middleware, with actions allowed.
func ExampleHandler() {
	db, err := sql.Open("pgx", "postgres://app@localhost/app")
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	dashboard := pgqweb.Handler(db, pgqweb.WithActions())
	mux.Handle("/queue/", requireOperator(http.StripPrefix("/queue", dashboard)))
	log.Fatal(http.ListenAndServe("127.0.0.1:8080", mux))
}

// requireOperator stands for your own auth middleware.
func requireOperator(h http.Handler) http.Handler { return h }
