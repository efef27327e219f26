-- Which patients changed since a search was read (PostgreSQL dialect; paired with
-- ../sqlite/0011_patient_changes.sql). See ARCHITECTURE.md, "The registry at scale".
--
-- A node remembers a search's ordered matches with the snapshot it read them in
-- (`search_cache`). Every write to a patient changes the scope's generation, so under
-- steady creations a common name's matches (tens of thousands of rows spread over the
-- table) were read again after nearly every write. Instead the node asks this log which
-- patients changed since that snapshot, reads those few again, and patches its list.
--
-- Transactions commit in any order, so "changed since" is not a position in the log: a
-- row carries the id of the transaction that wrote it, and a change is new to a
-- snapshot when that transaction is not visible in it (`pg_visible_in_snapshot`; every
-- transaction below the snapshot's xmin is, which the index bounds the search with).
-- The log keeps the newest 32,768 changes: the counters' fold (every 256th delta, one
-- at a time) deletes older rows and raises `patient_changes_pruned.xid` to the largest
-- transaction id it deleted. A snapshot whose xmin is not above it may have lost
-- changes: its search is read again in full.
CREATE TABLE patient_changes (
    seq         BIGSERIAL PRIMARY KEY,
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    patient_id  BIGINT NOT NULL
);
CREATE INDEX patient_changes_by_xid ON patient_changes (xid);

CREATE TABLE patient_changes_pruned (
    one  BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    xid  xid8 NOT NULL
);
INSERT INTO patient_changes_pruned (one, xid) VALUES (true, '0');

CREATE FUNCTION patient_changes_after_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO patient_changes (patient_id) SELECT id FROM old_rows;
    ELSE
        INSERT INTO patient_changes (patient_id) SELECT id FROM new_rows;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER patient_changes_insert AFTER INSERT ON patients REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION patient_changes_after_write();
CREATE TRIGGER patient_changes_update AFTER UPDATE ON patients REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION patient_changes_after_write();
CREATE TRIGGER patient_changes_delete AFTER DELETE ON patients REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION patient_changes_after_write();

-- Migration 0009's fold, which also prunes the log (under the same lock: one prune at a
-- time, so the watermark only grows). A change not yet committed is not seen, so not
-- deleted: it stays for every snapshot it is new to.
CREATE OR REPLACE FUNCTION patient_counts_compact() RETURNS bigint LANGUAGE plpgsql AS $$
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
    WITH gone AS (
        DELETE FROM patient_changes WHERE seq <= (SELECT MAX(seq) FROM patient_changes) - 32768 RETURNING xid
    )
    UPDATE patient_changes_pruned SET xid = GREATEST(xid, m) FROM (SELECT MAX(xid) AS m FROM gone) g WHERE m IS NOT NULL;
    RETURN folded;
END;
$$;
