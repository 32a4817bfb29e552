-- name: SchemaCurrent :one
SELECT current_schema()::text AS name;

-- name: SchemaRelations :many
-- Tables and indexes among names in schema, with their kind ('r' table,
-- 'i' index, 'p' partitioned table).
SELECT c.relname::text AS name, c.relkind::text AS kind
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = @schema_name::text
  AND c.relname = ANY(@names::text[]);

-- name: SchemaColumns :many
-- Columns of the tables among table_names in schema.
SELECT a.attrelid::regclass::text AS table_ref, c.relname::text AS table_name, a.attname::text AS column_name
FROM pg_catalog.pg_attribute AS a
JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = @schema_name::text
  AND c.relname = ANY(@table_names::text[])
  AND a.attnum > 0
  AND NOT a.attisdropped;

-- name: SchemaEnumLabels :many
-- The labels of enum type type_name in schema, in order.
SELECT e.enumlabel::text AS label
FROM pg_catalog.pg_enum AS e
JOIN pg_catalog.pg_type AS t ON t.oid = e.enumtypid
JOIN pg_catalog.pg_namespace AS n ON n.oid = t.typnamespace
WHERE n.nspname = @schema_name::text
  AND t.typname = @type_name::text
ORDER BY e.enumsortorder;

-- name: SchemaFunctionExists :one
SELECT EXISTS (
    SELECT 1
    FROM pg_catalog.pg_proc AS p
    JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
    WHERE n.nspname = @schema_name::text AND p.proname = @function_name::text
)::boolean AS found;

-- name: SchemaTriggerExists :one
SELECT EXISTS (
    SELECT 1
    FROM pg_catalog.pg_trigger AS t
    JOIN pg_catalog.pg_class AS c ON c.oid = t.tgrelid
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname = @schema_name::text
      AND c.relname = @table_name::text
      AND t.tgname = @trigger_name::text
)::boolean AS found;

-- name: SchemaNarrowIDs :many
-- The tables among the job, statistics and schedules tables whose id column
-- or id sequence is still int4 (created before PGQueuer 1.1.1).
SELECT t.rel::text AS table_name
FROM unnest(ARRAY[to_regclass('pgqueuer'), to_regclass('pgqueuer_statistics'),
                  to_regclass('pgqueuer_schedules')]) AS t (rel)
WHERE t.rel IS NOT NULL
  AND ((SELECT a.atttypid FROM pg_catalog.pg_attribute AS a
        WHERE a.attrelid = t.rel AND a.attname = 'id' AND NOT a.attisdropped) = 'int4'::regtype
       OR (SELECT s.seqtypid FROM pg_catalog.pg_sequence AS s
           WHERE s.seqrelid = to_regclass(pg_get_serial_sequence(t.rel::text, 'id'))) = 'int4'::regtype);

-- name: SchemaWidenIDs :exec
-- Widens the int4 id columns and id sequences of the job, statistics and
-- schedules tables to bigint, as PGQueuer 1.1.1's upgrade does. Each
-- ALTER COLUMN rewrites its table under an ACCESS EXCLUSIVE lock.
DO $$
DECLARE
    t regclass;
    seq text;
BEGIN
    FOREACH t IN ARRAY ARRAY[to_regclass('pgqueuer'), to_regclass('pgqueuer_statistics'),
                             to_regclass('pgqueuer_schedules')] LOOP
        CONTINUE WHEN t IS NULL;
        IF (SELECT a.atttypid FROM pg_catalog.pg_attribute AS a
            WHERE a.attrelid = t AND a.attname = 'id' AND NOT a.attisdropped) = 'int4'::regtype THEN
            EXECUTE format('ALTER TABLE %s ALTER COLUMN id TYPE bigint', t);
        END IF;
        seq := pg_get_serial_sequence(t::text, 'id');
        IF seq IS NOT NULL AND (SELECT s.seqtypid FROM pg_catalog.pg_sequence AS s
                                WHERE s.seqrelid = to_regclass(seq)) = 'int4'::regtype THEN
            EXECUTE format('ALTER SEQUENCE %s AS bigint', seq);
        END IF;
    END LOOP;
END
$$;

-- name: SchemaComments :many
-- The comments of the four tables (empty when none). Newer PGQueuer releases
-- mark each object they create with '{"pgqueuer":{"schema_revision":N}}';
-- pgq reads the mark in Go, where a malformed comment is simply no mark.
SELECT c.relname::text AS table_name, COALESCE(pg_catalog.obj_description(c.oid, 'pg_class'), '')::text AS comment
FROM unnest(ARRAY[to_regclass('pgqueuer'), to_regclass('pgqueuer_log'),
                  to_regclass('pgqueuer_statistics'), to_regclass('pgqueuer_schedules')]) AS t (rel)
JOIN pg_catalog.pg_class AS c ON c.oid = t.rel;
