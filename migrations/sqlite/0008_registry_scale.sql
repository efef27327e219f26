-- Lists and searches at a million patients (SQLite dialect; paired with
-- ../postgres/0008_registry_scale.sql). See ARCHITECTURE.md, "The registry at scale".

-- Exact patient counts per group (0: ungrouped) and status, kept by triggers in the
-- transaction of every write, so a list's `total` is a sum of a few rows instead of a
-- count of the table. `gen` grows with every insert, update and delete of a patient of
-- that group and status (before and after an update): the sum of a scope's `gen` is the
-- version its cached search results are checked against (an update may change a sort
-- key, `updated_at`, even when it changes nothing a search matches). Rows are never deleted, so that
-- sum never goes back.
CREATE TABLE patient_counts (
    group_key  INTEGER NOT NULL,
    status     TEXT NOT NULL,
    n          INTEGER NOT NULL,
    gen        INTEGER NOT NULL,
    PRIMARY KEY (group_key, status)
);
INSERT INTO patient_counts (group_key, status, n, gen)
    SELECT COALESCE(group_id, 0), status, COUNT(*), 1 FROM patients GROUP BY 1, 2;

CREATE TRIGGER patient_counts_insert AFTER INSERT ON patients BEGIN
    INSERT INTO patient_counts (group_key, status, n, gen) VALUES (COALESCE(new.group_id, 0), new.status, 1, 1)
        ON CONFLICT (group_key, status) DO UPDATE SET n = n + 1, gen = gen + 1;
END;
CREATE TRIGGER patient_counts_delete AFTER DELETE ON patients BEGIN
    UPDATE patient_counts SET n = n - 1, gen = gen + 1
        WHERE group_key = COALESCE(old.group_id, 0) AND status = old.status;
END;
CREATE TRIGGER patient_counts_update AFTER UPDATE ON patients BEGIN
    UPDATE patient_counts SET n = n - 1, gen = gen + 1
        WHERE group_key = COALESCE(old.group_id, 0) AND status = old.status;
    INSERT INTO patient_counts (group_key, status, n, gen) VALUES (COALESCE(new.group_id, 0), new.status, 1, 1)
        ON CONFLICT (group_key, status) DO UPDATE SET n = n + 1, gen = gen + 1;
END;

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
