-- Which patients changed since a search was read (SQLite dialect; paired with
-- ../postgres/0011_patient_changes.sql). See ARCHITECTURE.md, "The registry at scale".
--
-- A node remembers a search's ordered matches with the log position it read them at
-- (`search_cache`) and, once the scope's generation has moved, reads again only the
-- patients logged since, instead of the whole search. SQLite has one writer at a time,
-- so log positions are in commit order and "since" is `seq >` the position a snapshot
-- saw (AUTOINCREMENT: a position is never given twice, even after pruning). The log
-- keeps the newest 32,768 changes: every 4,096th change deletes older ones and records
-- the position pruned up to; a search read at or below it is read again in full.
CREATE TABLE patient_changes (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_id  INTEGER NOT NULL
);
CREATE TABLE patient_changes_pruned (
    one  INTEGER PRIMARY KEY CHECK (one = 1),
    seq  INTEGER NOT NULL
);
INSERT INTO patient_changes_pruned (one, seq) VALUES (1, 0);

CREATE TRIGGER patient_changes_insert AFTER INSERT ON patients BEGIN
    INSERT INTO patient_changes (patient_id) VALUES (new.id);
END;
CREATE TRIGGER patient_changes_update AFTER UPDATE ON patients BEGIN
    INSERT INTO patient_changes (patient_id) VALUES (new.id);
END;
CREATE TRIGGER patient_changes_delete AFTER DELETE ON patients BEGIN
    INSERT INTO patient_changes (patient_id) VALUES (old.id);
END;
CREATE TRIGGER patient_changes_prune AFTER INSERT ON patient_changes WHEN new.seq % 4096 = 0 BEGIN
    DELETE FROM patient_changes WHERE seq <= new.seq - 32768;
    UPDATE patient_changes_pruned SET seq = MAX(seq, new.seq - 32768);
END;
