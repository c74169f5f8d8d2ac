-- Each outbox row remembers which service wrote it (the session's application_name), and the
-- notification names it, so that a relay wakes only for its own service's messages instead of
-- every relay of every service racing for every row. Rows left by a producer that is down are
-- taken by any relay's periodic poll once they are a little old.
ALTER TABLE outbox ADD COLUMN producer text NOT NULL DEFAULT current_setting('application_name');
CREATE INDEX outbox_by_producer ON outbox (producer, id);

DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION lapor_outbox_notify();
CREATE FUNCTION lapor_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Identical notifications within a transaction are delivered once.
    PERFORM pg_notify('lapor_outbox', NEW.producer);
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH ROW EXECUTE FUNCTION lapor_outbox_notify();
