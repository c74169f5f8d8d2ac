-- The officers' review queue moves out of `cases`, so that a case's transitions can be HOT
-- updates (heap-only tuples: no new index entries, the new version on the same page).
--
-- PostgreSQL updates a row in place of its page only when no indexed column changes, and a
-- column in a partial index's predicate counts as indexed. `cases_in_review` had `status` in
-- its predicate, so every transition of every case wrote a new entry into each of the table's
-- indexes (the primary key, the tracking id, the reporter's key): none of 10,400 updates in a
-- bench run was HOT. The queue is now its own small table, kept by triggers on `cases` so
-- that no writer of a status can forget it; the triggers' WHEN clauses are checked in the
-- executor, so a transition that neither enters nor leaves review fires nothing.

CREATE TABLE review_queue (
    case_id     uuid PRIMARY KEY REFERENCES cases (id) ON DELETE CASCADE,
    received_at timestamptz NOT NULL
);
CREATE INDEX review_queue_by_age ON review_queue (received_at);

CREATE FUNCTION lapor_review_enter() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO review_queue (case_id, received_at) VALUES (NEW.id, NEW.received_at)
    ON CONFLICT (case_id) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE FUNCTION lapor_review_leave() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM review_queue WHERE case_id = OLD.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER review_enter_on_insert AFTER INSERT ON cases
    FOR EACH ROW WHEN (NEW.status = 'in_review') EXECUTE FUNCTION lapor_review_enter();
CREATE TRIGGER review_enter AFTER UPDATE OF status ON cases
    FOR EACH ROW WHEN (NEW.status = 'in_review' AND OLD.status IS DISTINCT FROM 'in_review')
    EXECUTE FUNCTION lapor_review_enter();
CREATE TRIGGER review_leave AFTER UPDATE OF status ON cases
    FOR EACH ROW WHEN (OLD.status = 'in_review' AND NEW.status IS DISTINCT FROM 'in_review')
    EXECUTE FUNCTION lapor_review_leave();

INSERT INTO review_queue (case_id, received_at)
SELECT id, received_at FROM cases WHERE status = 'in_review';

DROP INDEX cases_in_review;

-- Room on each page for the next version of its rows: a transition follows a case's insert
-- within milliseconds, and a full page would send the new version to another page (and new
-- entries to every index) after all. Applies to pages written from now on.
ALTER TABLE cases SET (fillfactor = 80);
