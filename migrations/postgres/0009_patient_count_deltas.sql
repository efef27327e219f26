-- Patient counters without a row that every writer waits on (PostgreSQL dialect; paired
-- with ../sqlite/0009_patient_count_deltas.sql). See ARCHITECTURE.md, "The registry at
-- scale".
--
-- Migration 0008's triggers updated one `patient_counts` row per (group, status) in the
-- transaction of every write, so concurrent creations in one group queued on that row
-- until each commit (168-233 patients/s through the API at 1M instead of 586 without
-- the trigger). Here the triggers only append: one `patient_count_deltas` row per
-- (group, status) a statement touched, with the same `n` and `gen` they used to add.
-- Appending takes no lock another writer waits on. A count is the sum over both tables
-- (in one statement, so one snapshot), and so is the generation the search cache checks.
-- Every 256th delta the writer folds the deltas into `patient_counts`
-- (`patient_counts_compact`), which changes neither sum.
CREATE TABLE patient_count_deltas (
    id         BIGSERIAL PRIMARY KEY,
    group_key  BIGINT NOT NULL,
    status     TEXT NOT NULL,
    n          BIGINT NOT NULL,
    gen        BIGINT NOT NULL
);

-- Folds every committed delta into the counters, atomically (one statement: the deltas
-- it deletes are the ones it adds). One fold at a time (a transaction-scoped advisory
-- lock; a second caller returns at once, leaving the deltas for the next fold), so two
-- folds never wait on each other's rows. Writers never touch the rows it locks: a delta
-- not yet committed is not seen, and is folded next time. Returns the deltas folded.
-- The lock's key is in the two-integer space (Cohort's other advisory locks take one
-- bigint): class 0x436f68 ('Coh'), object 8.
CREATE FUNCTION patient_counts_compact() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    folded bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(4419432, 8) THEN
        RETURN 0;
    END IF;
    WITH gone AS (
        DELETE FROM patient_count_deltas RETURNING group_key, status, n, gen
    ), added AS (
        INSERT INTO patient_counts AS c (group_key, status, n, gen)
            SELECT group_key, status, SUM(n), SUM(gen) FROM gone GROUP BY 1, 2 ORDER BY 1, 2
            ON CONFLICT (group_key, status) DO UPDATE SET n = c.n + excluded.n, gen = c.gen + excluded.gen
    )
    SELECT COUNT(*) INTO folded FROM gone;
    RETURN folded;
END;
$$;

-- Called by the triggers after they append: folds when one of the ids just taken is a
-- multiple of 256 (so the deltas stay a few hundred rows), and only in a READ COMMITTED
-- transaction (Cohort's only level; a fold's DELETE could fail to serialise in a stricter
-- one, and leaving the deltas for later is always correct).
CREATE FUNCTION patient_counts_fold_due(crossed boolean) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF crossed AND current_setting('transaction_isolation') = 'read committed' THEN
        PERFORM patient_counts_compact();
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION patient_counts_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    crossed boolean;
BEGIN
    WITH added AS (
        INSERT INTO patient_count_deltas (group_key, status, n, gen)
            SELECT COALESCE(group_id, 0), status, COUNT(*), 1 FROM new_rows GROUP BY 1, 2
            RETURNING id
    )
    SELECT bool_or(id % 256 = 0) INTO crossed FROM added;
    PERFORM patient_counts_fold_due(crossed);
    RETURN NULL;
END;
$$;
CREATE OR REPLACE FUNCTION patient_counts_after_delete() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    crossed boolean;
BEGIN
    WITH added AS (
        INSERT INTO patient_count_deltas (group_key, status, n, gen)
            SELECT COALESCE(group_id, 0), status, -COUNT(*), 1 FROM old_rows GROUP BY 1, 2
            RETURNING id
    )
    SELECT bool_or(id % 256 = 0) INTO crossed FROM added;
    PERFORM patient_counts_fold_due(crossed);
    RETURN NULL;
END;
$$;
CREATE OR REPLACE FUNCTION patient_counts_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    crossed boolean;
BEGIN
    WITH added AS (
        INSERT INTO patient_count_deltas (group_key, status, n, gen)
            SELECT k, s, SUM(d), 1 FROM (
                SELECT COALESCE(group_id, 0) AS k, status AS s, -1 AS d FROM old_rows
                UNION ALL
                SELECT COALESCE(group_id, 0), status, 1 FROM new_rows
            ) changed GROUP BY k, s
            RETURNING id
    )
    SELECT bool_or(id % 256 = 0) INTO crossed FROM added;
    PERFORM patient_counts_fold_due(crossed);
    RETURN NULL;
END;
$$;
