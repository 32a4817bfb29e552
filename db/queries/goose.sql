-- name: GooseDefaultTableExists :one
-- Whether goose's default version table is on the search path.
SELECT (to_regclass('goose_db_version') IS NOT NULL)::boolean AS found;

-- name: GooseDefaultAppliedVersions :many
-- The versions among versions that goose_db_version records as applied.
SELECT DISTINCT version_id
FROM goose_db_version
WHERE is_applied AND version_id = ANY(@versions::bigint[])
ORDER BY version_id;

-- name: GooseDefaultPgqRecords :many
-- The rows of goose_db_version among versions that were written by a
-- transaction that also created or changed one of pgq's objects in
-- schema_name (its tables and indexes, enum type and values, function,
-- trigger): pgq's migrations, recorded there by an app's goose pipeline.
-- goose inserts a migration's version row in the migration's transaction,
-- so the two share their xmin (returned as txid).
SELECT v.id, v.version_id, v.xmin::text AS txid
FROM goose_db_version AS v
WHERE v.is_applied
  AND v.version_id = ANY(@versions::bigint[])
  AND v.xmin::text IN (
    SELECT c.xmin::text
    FROM pg_catalog.pg_class AS c
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname = @schema_name::text AND c.relname = ANY(@relations::text[])
    UNION ALL
    SELECT a.xmin::text
    FROM pg_catalog.pg_attribute AS a
    JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname = @schema_name::text AND c.relname = ANY(@relations::text[])
    UNION ALL
    SELECT t.xmin::text
    FROM pg_catalog.pg_type AS t
    JOIN pg_catalog.pg_namespace AS n ON n.oid = t.typnamespace
    WHERE n.nspname = @schema_name::text AND t.typname = @type_name::text
    UNION ALL
    SELECT e.xmin::text
    FROM pg_catalog.pg_enum AS e
    JOIN pg_catalog.pg_type AS t ON t.oid = e.enumtypid
    JOIN pg_catalog.pg_namespace AS n ON n.oid = t.typnamespace
    WHERE n.nspname = @schema_name::text AND t.typname = @type_name::text
    UNION ALL
    SELECT p.xmin::text
    FROM pg_catalog.pg_proc AS p
    JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
    WHERE n.nspname = @schema_name::text AND p.proname = @function_name::text
    UNION ALL
    SELECT tg.xmin::text
    FROM pg_catalog.pg_trigger AS tg
    JOIN pg_catalog.pg_class AS c ON c.oid = tg.tgrelid
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname = @schema_name::text AND tg.tgname = @trigger_name::text
  )
ORDER BY v.id;

-- name: GooseDefaultDelete :exec
-- Removes rows of goose_db_version by id.
DELETE FROM goose_db_version WHERE id = ANY(@ids::bigint[]);
