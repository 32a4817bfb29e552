-- pgq schema, version 10: a worker's finishes may leave their notification
-- to the worker.
--
-- Every finish of a pgq worker deletes rows, and the job table's trigger
-- sent a table_changed_event for each one: hundreds a second under load,
-- each delivered to every listener of the channel (every worker, every
-- watcher, PGQueuer's too) and each taking the lock that orders notifying
-- commits. Only watchers need them, and they re-read every waited job on
-- any one. A finish that sets pgq.quiet_delete for its transaction now
-- sends none; the worker then sends the same event itself, once for all
-- the finishes of the last 20 ms (see completer.go). Without the setting
-- (PGQueuer, CompleteTx, any other delete) the trigger behaves as before.
--
-- PGQueuer's own upgrade replaces the function with its text, which drops
-- the test: every delete then notifies again, as before this version.

-- +goose Up
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION fn_pgqueuer_changed() RETURNS TRIGGER AS $$
BEGIN
    IF (TG_OP IN ('INSERT', 'TRUNCATE')
        OR (TG_OP = 'DELETE' AND current_setting('pgq.quiet_delete', true) IS DISTINCT FROM 'on')
        OR (TG_OP = 'UPDATE' AND OLD IS DISTINCT FROM NEW)) THEN
        PERFORM pg_notify(
            'ch_pgqueuer',
            json_build_object(
                'channel', 'ch_pgqueuer',
                'operation', lower(TG_OP),
                'sent_at', now(),
                'table', TG_TABLE_NAME,
                'type', 'table_changed_event'
            )::text
        );
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        RETURN NEW;
    ELSIF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION fn_pgqueuer_changed() RETURNS TRIGGER AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'DELETE', 'TRUNCATE')
       OR (TG_OP = 'UPDATE' AND OLD IS DISTINCT FROM NEW) THEN
        PERFORM pg_notify(
            'ch_pgqueuer',
            json_build_object(
                'channel', 'ch_pgqueuer',
                'operation', lower(TG_OP),
                'sent_at', now(),
                'table', TG_TABLE_NAME,
                'type', 'table_changed_event'
            )::text
        );
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        RETURN NEW;
    ELSIF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd
