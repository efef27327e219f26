-- The name order's indexes hold the list's columns (SQLite dialect; paired with
-- ../postgres/0015_name_order_covers_the_list.sql). See ARCHITECTURE.md, "The registry
-- at scale".
--
-- Nothing to do here: SQLite has no `INCLUDE`, and a page's 50 patients are found by
-- their rowid (the table's own key), a few microseconds each. The version exists so
-- that both databases carry the same migration numbers.
SELECT 1;
