-- Producers on the hot path publish their own rows right after their commit (outbox::Handoff).
-- They write them with publish_after a little in the future: claims leave such rows alone until
-- then, and take them only if they are still there (the producer crashed, or the broker was
-- away). Rows meant for the relay at once keep publish_after = now() and notify it as before.
ALTER TABLE outbox ADD COLUMN publish_after timestamptz NOT NULL DEFAULT now();

DROP TRIGGER outbox_notify ON outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH ROW WHEN (NEW.publish_after <= now()) EXECUTE FUNCTION lapor_outbox_notify();
