-- A scope's counts per status read without sorting (PostgreSQL dialect; paired with
-- ../sqlite/0012_counters_by_status.sql). See ARCHITECTURE.md, "The registry at scale".
--
-- Nothing to do here: PostgreSQL groups the union of the counters and the deltas by
-- status in a hash table, without sorting. The version exists so that both databases
-- carry the same migration numbers.
SELECT 1;
