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
