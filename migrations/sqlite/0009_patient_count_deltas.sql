-- Patient counters without a row that every writer waits on (SQLite dialect; paired
-- with ../postgres/0009_patient_count_deltas.sql). See ARCHITECTURE.md, "The registry at
-- scale".
--
-- The same design on both databases: the triggers append one `patient_count_deltas` row
-- per change (what migration 0008's triggers added to `patient_counts`), a count and the
-- search cache's generation are the sum over both tables, and a fold moves the deltas
-- into the counters without changing either sum. SQLite has one writer at a time, so
-- 0008's counters never queued writers here; the deltas keep one mechanism, one query
-- and one test for both databases. The fold runs in the writer's own transaction (the
-- only one writing), when a delta's id is a multiple of 256.
CREATE TABLE patient_count_deltas (
    id         INTEGER PRIMARY KEY,
    group_key  INTEGER NOT NULL,
    status     TEXT NOT NULL,
    n          INTEGER NOT NULL,
    gen        INTEGER NOT NULL
);

DROP TRIGGER patient_counts_insert;
DROP TRIGGER patient_counts_delete;
DROP TRIGGER patient_counts_update;
CREATE TRIGGER patient_counts_insert AFTER INSERT ON patients BEGIN
    INSERT INTO patient_count_deltas (group_key, status, n, gen) VALUES (COALESCE(new.group_id, 0), new.status, 1, 1);
END;
CREATE TRIGGER patient_counts_delete AFTER DELETE ON patients BEGIN
    INSERT INTO patient_count_deltas (group_key, status, n, gen) VALUES (COALESCE(old.group_id, 0), old.status, -1, 1);
END;
CREATE TRIGGER patient_counts_update AFTER UPDATE ON patients BEGIN
    INSERT INTO patient_count_deltas (group_key, status, n, gen) VALUES (COALESCE(old.group_id, 0), old.status, -1, 1);
    INSERT INTO patient_count_deltas (group_key, status, n, gen) VALUES (COALESCE(new.group_id, 0), new.status, 1, 1);
END;

-- The fold ("WHERE true" keeps SQLite from reading ON CONFLICT as a join constraint).
CREATE TRIGGER patient_count_deltas_fold AFTER INSERT ON patient_count_deltas WHEN new.id % 256 = 0 BEGIN
    INSERT INTO patient_counts (group_key, status, n, gen)
        SELECT group_key, status, SUM(n), SUM(gen) FROM patient_count_deltas WHERE true GROUP BY group_key, status
        ON CONFLICT (group_key, status) DO UPDATE SET n = n + excluded.n, gen = gen + excluded.gen;
    DELETE FROM patient_count_deltas;
END;
