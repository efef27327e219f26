-- Lists in name order read from a key onwards (PostgreSQL dialect; paired with
-- ../sqlite/0010_name_order_keyset.sql). See ARCHITECTURE.md, "Pages deep in a list".
--
-- A page deep in a list is read from the nearest remembered row of that list (an
-- anchor: its sort key) onwards, in parts that each say "the same as the anchor up to
-- this column, after it on the next", which both databases answer from an index range.
-- "After" a first name must not be NULL for that: NULL sorts last on PostgreSQL and
-- first on SQLite, and a range leaves it out on both. So the name order's first name is
-- COALESCE(first_name, ''): a missing first name sorts as an empty one (the id breaks
-- the tie, as before). Patients without a last name still come last in both directions.
DROP INDEX patients_by_name;
DROP INDEX patients_by_name_desc;
CREATE INDEX patients_by_name ON patients ((last_name IS NULL), last_name, COALESCE(first_name, ''), id);
CREATE INDEX patients_by_name_desc ON patients ((last_name IS NULL), last_name DESC, COALESCE(first_name, '') DESC, id DESC);
