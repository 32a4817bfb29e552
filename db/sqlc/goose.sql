-- goose's default version table, as goose creates it. pgq's own migrations
-- record their versions in pgqueuer_pgq_version; pgq reads goose_db_version
-- only to recognise pgq's versions recorded there by an app's own goose
-- pipeline (see GooseProvider). This file is never run against a database.
CREATE TABLE goose_db_version (
    id         SERIAL PRIMARY KEY,
    version_id BIGINT NOT NULL,
    is_applied BOOLEAN NOT NULL,
    tstamp     TIMESTAMP DEFAULT now()
);
