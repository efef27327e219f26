-- The default order's index holds the list's columns (PostgreSQL dialect; paired with
-- ../sqlite/0013_default_order_covers_the_list.sql). See ARCHITECTURE.md, "The registry
-- at scale".
--
-- A page deep in the whole registry, in the default order (`-updated_at`), walks up to
-- 549 entries of this index from its anchor, then reads its 50 patients by primary
-- key: 200 buffers and ~0.3 ms of PostgreSQL's ~0.45 ms per page at a million patients.
-- With the list's columns in the index (`INCLUDE`), the page is read from the index
-- alone (9 buffers; rows not yet marked all-visible by VACUUM are read from the table,
-- as before). The other orders keep their narrow indexes: a wide copy of the table per
-- order is more disk and more writes than their deep pages are worth.
DROP INDEX patients_by_updated;
CREATE INDEX patients_by_updated ON patients (updated_at, id)
    INCLUDE (external_id, orthanc_patient_id, dicom_study_uid, status, first_name, last_name, date_of_birth, group_id, created_at);
