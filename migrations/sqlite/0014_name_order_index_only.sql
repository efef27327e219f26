-- The name order's indexes return the first name too (SQLite dialect; paired with
-- ../postgres/0014_name_order_index_only.sql). See ARCHITECTURE.md, "The registry at
-- scale".
--
-- Nothing to do here: SQLite has no `INCLUDE`. The version exists so that both
-- databases carry the same migration numbers.
SELECT 1;
