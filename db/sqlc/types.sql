-- sqlc reads db/migrations for the schema, but it cannot see the enum type that
-- migration 00001 creates inside a DO block (to stay idempotent). This file
-- tells sqlc about that one type; it is never run against a database.
CREATE TYPE pgqueuer_status AS ENUM (
    'queued', 'picked', 'successful', 'exception', 'canceled', 'deleted', 'failed'
);
