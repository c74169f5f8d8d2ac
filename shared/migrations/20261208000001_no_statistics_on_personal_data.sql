-- ANALYZE copies sampled values of every column into pg_statistic (most common values,
-- histogram bounds). For the columns below that is personal data or the free text it hides
-- in: NIKs, names, phone numbers and addresses, complaint bodies, officers' notes, and the
-- unit messages (with the assignee's identity) waiting in the outbox or parked. A copy there
-- outlives the erasure of its case until the next ANALYZE happens to sample other rows, and
-- any role that may read the column reads it through pg_stats. No query filters, joins or
-- sorts on these columns, so the planner has no use for their statistics; computing them
-- was also about a third of what ANALYZE cost on these tables (BENCHMARKS.md).
--
-- A statistics target of 0 stops new samples. Setting a column's type drops the statistics
-- already gathered for it; the type is the same, so nothing is rewritten or reindexed.

ALTER TABLE case_identity
    ALTER COLUMN nik SET STATISTICS 0, ALTER COLUMN nik TYPE text,
    ALTER COLUMN kk_number SET STATISTICS 0, ALTER COLUMN kk_number TYPE text,
    ALTER COLUMN name SET STATISTICS 0, ALTER COLUMN name TYPE text,
    ALTER COLUMN phone SET STATISTICS 0, ALTER COLUMN phone TYPE text,
    ALTER COLUMN email SET STATISTICS 0, ALTER COLUMN email TYPE text,
    ALTER COLUMN address SET STATISTICS 0, ALTER COLUMN address TYPE text,
    ALTER COLUMN location_address SET STATISTICS 0, ALTER COLUMN location_address TYPE text;

ALTER TABLE cases
    ALTER COLUMN title SET STATISTICS 0, ALTER COLUMN title TYPE text,
    ALTER COLUMN body SET STATISTICS 0, ALTER COLUMN body TYPE text,
    ALTER COLUMN reporter_message SET STATISTICS 0, ALTER COLUMN reporter_message TYPE text;

ALTER TABLE case_events
    ALTER COLUMN note SET STATISTICS 0, ALTER COLUMN note TYPE text;

ALTER TABLE case_decisions
    ALTER COLUMN note SET STATISTICS 0, ALTER COLUMN note TYPE text;

ALTER TABLE case_attachments
    ALTER COLUMN url SET STATISTICS 0, ALTER COLUMN url TYPE text;

-- Keys are chosen by clients; an SMS gateway may build one from the sender's number. The
-- key is the primary key, so the planner knows a lookup finds one row without statistics.
ALTER TABLE idempotency_keys
    ALTER COLUMN key SET STATISTICS 0, ALTER COLUMN key TYPE text;

ALTER TABLE outbox
    ALTER COLUMN headers SET STATISTICS 0, ALTER COLUMN headers TYPE jsonb,
    ALTER COLUMN payload SET STATISTICS 0, ALTER COLUMN payload TYPE bytea;

ALTER TABLE parked_messages
    ALTER COLUMN headers SET STATISTICS 0, ALTER COLUMN headers TYPE jsonb,
    ALTER COLUMN payload SET STATISTICS 0, ALTER COLUMN payload TYPE bytea;
