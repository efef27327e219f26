-- The import journal (SQLite dialect; paired with ../postgres/0007_import_journal.sql).
--
-- An import writes down who imports and into which group before it stores anything in
-- Orthanc, and each study (PatientID + StudyInstanceUID read from the file) before the
-- study's first instance is sent. The row is deleted in the transaction that writes the
-- import's IMPORT audit row. A row still here after its heartbeat went stale is an
-- import that died (process killed, machine lost): reconciliation registers what
-- Orthanc holds of its studies under its group and audits it as RECONCILE.
CREATE TABLE import_journal (
    id              INTEGER PRIMARY KEY,
    user_id         INTEGER REFERENCES users (id) ON DELETE SET NULL,
    actor_email     TEXT,
    ip              TEXT,
    token_id        INTEGER,
    -- which existing patients the importer could add to: 'all', 'group' (scope_group_id)
    -- or 'nothing'
    scope           TEXT NOT NULL CHECK (scope IN ('all', 'group', 'nothing')),
    scope_group_id  INTEGER REFERENCES groups (id) ON DELETE SET NULL,
    -- the group the import's new patients get
    group_id        INTEGER REFERENCES groups (id) ON DELETE SET NULL,
    started_at      TEXT NOT NULL,
    heartbeat_at    TEXT NOT NULL
);

CREATE TABLE import_journal_studies (
    import_id           INTEGER NOT NULL REFERENCES import_journal (id) ON DELETE CASCADE,
    -- the DICOM PatientID as the file spells it (trimmed)
    patient_key         TEXT NOT NULL,
    study_instance_uid  TEXT NOT NULL,
    PRIMARY KEY (import_id, study_instance_uid, patient_key)
);
CREATE INDEX import_journal_studies_uid ON import_journal_studies (study_instance_uid);
