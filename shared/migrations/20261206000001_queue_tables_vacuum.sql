-- Queue-like tables: every outbox row is inserted and deleted within milliseconds, and every
-- open case's deadline row is rewritten on each transition. With the default scale factors
-- autovacuum waits for a share of the table to be dead, while the relay's claim scans walk
-- over every dead row still there. Vacuum them after a fixed number of dead rows instead.
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
                        autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 1000);
ALTER TABLE case_deadlines SET (autovacuum_vacuum_scale_factor = 0.02);
