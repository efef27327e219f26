-- De-identified export (PostgreSQL dialect; paired with ../sqlite/0006_deidentification.sql).

-- 'deidentified_only': the group's users may only export de-identified data and may not
-- download identified image files. deid_key: 256 random bits (hex), made on first use,
-- never sent to any client.
ALTER TABLE groups ADD COLUMN export_policy TEXT NOT NULL DEFAULT 'any'
    CHECK (export_policy IN ('any', 'deidentified_only'));
ALTER TABLE groups ADD COLUMN deid_key TEXT;

-- Every pseudonym a patient has been given (one per group key it was exported under), so
-- an admin can find the patient behind a pseudonym that comes back from a study.
CREATE TABLE pseudonyms (
    pseudonym   TEXT PRIMARY KEY,
    patient_id  BIGINT NOT NULL REFERENCES patients (id) ON DELETE CASCADE,
    group_id    BIGINT REFERENCES groups (id) ON DELETE SET NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX pseudonyms_patient_id ON pseudonyms (patient_id);
