-- The name order's indexes hold the list's columns (PostgreSQL dialect; paired with
-- ../sqlite/0015_name_order_covers_the_list.sql). See ARCHITECTURE.md, "The registry at
-- scale".
--
-- A page deep in the whole registry by name walks its index from its anchor (index
-- only since migration 0014), then read its 50 patients by primary key: 50 descents of
-- that index and 50 table pages, most of PostgreSQL's CPU for such a page (421 µs per
-- page against 139 in the default order, whose index holds the list since migration
-- 0013). With the list's columns in both name indexes (`INCLUDE`), that page is read
-- from the walk alone, as in the default order. The cost: each index grows from ~72 to
-- ~118 MB at a million patients.
--
-- The new indexes are built before the old ones are dropped: building one locks the
-- table against writes only (~10 and ~7 s at a million patients), while `DROP INDEX`
-- locks it against reads too until the migration commits, which is then a moment.
CREATE INDEX patients_by_name_0015 ON patients ((last_name IS NULL), last_name, COALESCE(first_name, ''), id)
    INCLUDE (external_id, orthanc_patient_id, dicom_study_uid, status, first_name, date_of_birth, group_id, created_at, updated_at);
CREATE INDEX patients_by_name_desc_0015 ON patients ((last_name IS NULL), last_name DESC, COALESCE(first_name, '') DESC, id DESC)
    INCLUDE (external_id, orthanc_patient_id, dicom_study_uid, status, first_name, date_of_birth, group_id, created_at, updated_at);
DROP INDEX patients_by_name;
DROP INDEX patients_by_name_desc;
ALTER INDEX patients_by_name_0015 RENAME TO patients_by_name;
ALTER INDEX patients_by_name_desc_0015 RENAME TO patients_by_name_desc;
