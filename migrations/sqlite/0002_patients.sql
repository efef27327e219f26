-- The patient registry linked to Orthanc (SQLite dialect; paired with
-- ../postgres/0002_patients.sql).

CREATE TABLE patients (
    id                  INTEGER PRIMARY KEY,
    -- IPP: the DICOM PatientID
    external_id         TEXT NOT NULL UNIQUE,
    orthanc_patient_id  TEXT UNIQUE,
    -- StudyInstanceUID of the latest study
    dicom_study_uid     TEXT,
    status              TEXT NOT NULL CHECK (status IN ('to_interpret', 'in_progress', 'validated', 'archived')),
    first_name          TEXT,
    last_name           TEXT,
    date_of_birth       TEXT,
    group_id            INTEGER REFERENCES groups (id) ON DELETE RESTRICT,
    -- external_id and names folded (lower case, no accents) for ?q= searches
    search_text         TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);
CREATE INDEX patients_group_id ON patients (group_id);
CREATE INDEX patients_status ON patients (status);
CREATE INDEX patients_updated_at ON patients (updated_at);

-- Orthanc keys a study by PatientID + StudyInstanceUID, so one StudyInstanceUID may
-- appear under two patients; orthanc_study_id is the unique key.
CREATE TABLE studies (
    id                  INTEGER PRIMARY KEY,
    patient_id          INTEGER NOT NULL REFERENCES patients (id) ON DELETE CASCADE,
    study_instance_uid  TEXT NOT NULL,
    orthanc_study_id    TEXT NOT NULL UNIQUE,
    study_date          TEXT,
    description         TEXT,
    -- comma-separated, e.g. 'CT,MR'
    modalities          TEXT NOT NULL DEFAULT '',
    instances_count     INTEGER NOT NULL DEFAULT 0,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);
CREATE INDEX studies_patient_id ON studies (patient_id);

-- The instances of registered studies: answers "may this caller fetch this image?" and
-- lists a patient's instances without asking Orthanc.
CREATE TABLE instances (
    orthanc_instance_id  TEXT PRIMARY KEY,
    study_id             INTEGER NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    patient_id           INTEGER NOT NULL REFERENCES patients (id) ON DELETE CASCADE,
    orthanc_series_id    TEXT NOT NULL,
    sop_instance_uid     TEXT NOT NULL,
    series_instance_uid  TEXT NOT NULL,
    instance_number      INTEGER,
    modality             TEXT
);
CREATE INDEX instances_study_id ON instances (study_id);
CREATE INDEX instances_patient_id ON instances (patient_id);
CREATE INDEX instances_orthanc_series_id ON instances (orthanc_series_id);
