package pgqtest

import (
	"context"
	"database/sql"

	"github.com/pgq-dev/pgq"
)

// install installs the pgq schema into the template database.
func install(ctx context.Context, db *sql.DB) error {
	return pgq.Install(ctx, db)
}
