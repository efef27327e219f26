-- Substring search over patients without scanning the table: a trigram GIN index
-- (pg_trgm, a trusted extension since PostgreSQL 13) serves `LIKE '%…%'` for queries of
-- three characters or more. Where the extension cannot be installed, search still works
-- by scanning, and the server logs why.

DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    CREATE INDEX patients_search_trgm ON patients USING gin (search_text gin_trgm_ops);
EXCEPTION WHEN insufficient_privilege OR undefined_file OR feature_not_supported THEN
    RAISE WARNING 'pg_trgm is unavailable (%); patient search will scan the table', SQLERRM;
END;
$$;
