-- Two indexes that every complaint paid for on every message and that no hot query reads.
-- A bench run's WAL showed 37 index insertions per complaint; these two were six of them.
--
-- outbox_by_producer: the outbox holds only the rows of the last moments (hand-offs are
-- deleted within a tenth of a second), and the relay's claim filters by producer OR age, which
-- the planner serves with a scan of the table (or of its primary key, in id order, when a
-- backlog makes the table large), never with this index.
DROP INDEX outbox_by_producer;

-- inbox_by_age: read only by the hourly pruning of ids older than a week. A sequential scan
-- once an hour costs less than an index entry for every message handled.
DROP INDEX inbox_by_age;
