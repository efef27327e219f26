-- Lists and searches at a million patients (PostgreSQL dialect; paired with
-- ../sqlite/0008_registry_scale.sql). See ARCHITECTURE.md, "The registry at scale".

-- Exact patient counts per group (0: ungrouped) and status, kept by triggers in the
-- transaction of every write, so a list's `total` is a sum of a few rows instead of a
-- count of the table. `gen` grows with every insert, update and delete of a patient of
-- that group and status (before and after an update): the sum of a scope's `gen` is the
-- version its cached search results are checked against (an update may change a sort
-- key, `updated_at`, even when it changes nothing a search matches). Rows are never deleted, so that
-- sum never goes back. The triggers run once per statement over its transition tables
-- (a bulk insert updates each counter once) and touch counters in key order, so two
-- writers never wait on each other's counters in opposite orders within a statement.
CREATE TABLE patient_counts (
    group_key  BIGINT NOT NULL,
    status     TEXT NOT NULL,
    n          BIGINT NOT NULL,
    gen        BIGINT NOT NULL,
    PRIMARY KEY (group_key, status)
);
INSERT INTO patient_counts (group_key, status, n, gen)
    SELECT COALESCE(group_id, 0), status, COUNT(*), 1 FROM patients GROUP BY 1, 2;

CREATE FUNCTION patient_counts_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO patient_counts AS c (group_key, status, n, gen)
        SELECT COALESCE(group_id, 0), status, COUNT(*), 1 FROM new_rows GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (group_key, status) DO UPDATE SET n = c.n + excluded.n, gen = c.gen + 1;
    RETURN NULL;
END;
$$;
CREATE FUNCTION patient_counts_after_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO patient_counts AS c (group_key, status, n, gen)
        SELECT COALESCE(group_id, 0), status, -COUNT(*), 1 FROM old_rows GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (group_key, status) DO UPDATE SET n = c.n + excluded.n, gen = c.gen + 1;
    RETURN NULL;
END;
$$;
CREATE FUNCTION patient_counts_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO patient_counts AS c (group_key, status, n, gen)
        SELECT k, s, SUM(d), 1 FROM (
            SELECT COALESCE(group_id, 0) AS k, status AS s, -1 AS d FROM old_rows
            UNION ALL
            SELECT COALESCE(group_id, 0), status, 1 FROM new_rows
        ) changed GROUP BY k, s ORDER BY k, s
        ON CONFLICT (group_key, status) DO UPDATE SET n = c.n + excluded.n, gen = c.gen + 1;
    RETURN NULL;
END;
$$;
CREATE TRIGGER patient_counts_insert AFTER INSERT ON patients REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION patient_counts_after_insert();
CREATE TRIGGER patient_counts_delete AFTER DELETE ON patients REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION patient_counts_after_delete();
CREATE TRIGGER patient_counts_update AFTER UPDATE ON patients REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION patient_counts_after_update();

-- One index per sort order the API offers, ending with the id that breaks ties, so a
-- page is read in order from an index whatever its sort (and the last pages backwards);
-- the group's and the status's lead with their filter for the default sort.
DROP INDEX patients_status;
DROP INDEX patients_updated_at;
DROP INDEX patients_group_id;
CREATE INDEX patients_by_updated ON patients (updated_at, id);
CREATE INDEX patients_by_created ON patients (created_at, id);
CREATE INDEX patients_by_name ON patients ((last_name IS NULL), last_name, first_name, id);
CREATE INDEX patients_by_name_desc ON patients ((last_name IS NULL), last_name DESC, first_name DESC, id DESC);
CREATE INDEX patients_by_status ON patients (status, updated_at, id);
CREATE INDEX patients_by_group ON patients (group_id, updated_at, id);
