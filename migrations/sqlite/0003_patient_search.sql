-- Substring search over patients without scanning the table: an FTS5 index of trigrams
-- over the folded search text (SQLite 3.34+), kept in step by triggers. Queries of
-- three characters or more use it; shorter ones scan with LIKE.

CREATE VIRTUAL TABLE patients_fts USING fts5(
    search_text,
    content = 'patients',
    content_rowid = 'id',
    tokenize = 'trigram'
);
INSERT INTO patients_fts (patients_fts) VALUES ('rebuild');

CREATE TRIGGER patients_fts_insert AFTER INSERT ON patients BEGIN
    INSERT INTO patients_fts (rowid, search_text) VALUES (new.id, new.search_text);
END;
CREATE TRIGGER patients_fts_delete AFTER DELETE ON patients BEGIN
    INSERT INTO patients_fts (patients_fts, rowid, search_text) VALUES ('delete', old.id, old.search_text);
END;
CREATE TRIGGER patients_fts_update AFTER UPDATE OF search_text ON patients
WHEN new.search_text IS NOT old.search_text BEGIN
    INSERT INTO patients_fts (patients_fts, rowid, search_text) VALUES ('delete', old.id, old.search_text);
    INSERT INTO patients_fts (rowid, search_text) VALUES (new.id, new.search_text);
END;
