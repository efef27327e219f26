-- A scope's counts per status read without sorting (SQLite dialect; paired with
-- ../postgres/0012_counters_by_status.sql). See ARCHITECTURE.md, "The registry at scale".
--
-- Most list requests read the counts (`patients::counted_sql`): per status, the sum over
-- the counters and the deltas not yet folded. SQLite grouped their union through a
-- sorter: an admin's counts took 110–120 µs of a deep page's 350 µs at a million
-- patients (21 groups). Grouped table by table, each in the order of an index that
-- holds the summed columns (and a delta's group, for a group's counts), they stream:
-- 48 µs; a group's counts, which its counters' primary key already served, 19–22 µs.
CREATE INDEX patient_counts_by_status ON patient_counts (status, n, gen);
CREATE INDEX patient_count_deltas_by_status ON patient_count_deltas (status, group_key, n, gen);
