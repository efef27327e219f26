-- The name order's indexes return the first name too (PostgreSQL dialect; paired with
-- ../sqlite/0014_name_order_index_only.sql). See ARCHITECTURE.md, "The registry at
-- scale".
--
-- The name order sorts by `COALESCE(first_name, '')`, an expression its indexes hold,
-- but PostgreSQL reads an index alone only when every column the query names is one
-- the index returns, and `first_name` itself was not: every walk in that order (a deep
-- page from its anchor: 1,098 index entries, 1,113 buffers, ~7 ms at a million
-- patients; the anchors' own pass) fetched each row from the table. With the column
-- included, the same page reads 15 buffers in 0.65 ms.
DROP INDEX patients_by_name;
DROP INDEX patients_by_name_desc;
CREATE INDEX patients_by_name ON patients ((last_name IS NULL), last_name, COALESCE(first_name, ''), id) INCLUDE (first_name);
CREATE INDEX patients_by_name_desc ON patients ((last_name IS NULL), last_name DESC, COALESCE(first_name, '') DESC, id DESC)
    INCLUDE (first_name);
