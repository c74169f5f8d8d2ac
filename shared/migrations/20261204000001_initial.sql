-- Cases and their public timeline. Personal data lives only in case_identity (and in the KK
-- copy's URL in case_attachments), so most queries never touch it and database grants can
-- keep it from readers who need only the case.

CREATE TABLE cases (
    id                uuid PRIMARY KEY,
    tracking_id       text NOT NULL UNIQUE,
    status            text NOT NULL,
    channel           text NOT NULL,
    claimed_kind      text,
    title             text,
    body              text NOT NULL,
    province_code     text NOT NULL,
    regency_code      text,
    anonymous         boolean NOT NULL,
    confidential      boolean NOT NULL,
    lapor_tracking_id text,
    -- Keyed hash of the reporter's NIK: finds their earlier cases without reading the NIK.
    reporter_ref      bytea NOT NULL,
    received_at       timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    -- The decision in force (history in case_decisions).
    kind              text,
    in_scope          boolean,
    category          text,
    needs_followup    boolean,
    -- The unit that must act now, once routed.
    holder_unit       text,
    duplicate_of      uuid REFERENCES cases (id),
    -- What the reporter is told now: what is missing, the normative answer, the agency to
    -- turn to, or the unit's answer.
    reporter_message  text
);
CREATE INDEX cases_by_reporter ON cases (reporter_ref, received_at);
CREATE INDEX cases_by_lapor_id ON cases (lapor_tracking_id) WHERE lapor_tracking_id IS NOT NULL;
CREATE INDEX cases_in_review ON cases (received_at) WHERE status = 'in_review';

CREATE TABLE case_identity (
    case_id          uuid PRIMARY KEY REFERENCES cases (id) ON DELETE CASCADE,
    name             text NOT NULL,
    nik              text NOT NULL,
    phone            text NOT NULL,
    email            text,
    address          text,
    kk_number        text,
    location_address text
);

CREATE TABLE case_attachments (
    case_id  uuid NOT NULL REFERENCES cases (id) ON DELETE CASCADE,
    position int NOT NULL,
    kind     text NOT NULL,
    url      text NOT NULL,
    sha256   text NOT NULL,
    added_at timestamptz NOT NULL,
    PRIMARY KEY (case_id, position)
);

-- The timeline the reporter sees and the SLA clock is computed from. Notes are written for
-- the reporter and never contain personal data.
CREATE TABLE case_events (
    id      bigserial PRIMARY KEY,
    case_id uuid NOT NULL REFERENCES cases (id) ON DELETE CASCADE,
    at      timestamptz NOT NULL,
    event   text NOT NULL,
    status  text NOT NULL,
    unit    text,
    actor   text NOT NULL,
    note    text
);
CREATE INDEX case_events_by_case ON case_events (case_id, id);

-- Every verification decision, automatic or human, with who made it and the evidence.
CREATE TABLE case_decisions (
    id             bigserial PRIMARY KEY,
    case_id        uuid NOT NULL REFERENCES cases (id) ON DELETE CASCADE,
    at             timestamptz NOT NULL,
    actor          text NOT NULL,
    decision       text NOT NULL,
    kind           text,
    in_scope       boolean,
    category       text,
    needs_followup boolean,
    confidence     real,
    evidence       jsonb NOT NULL DEFAULT '[]',
    note           text
);
CREATE INDEX case_decisions_by_case ON case_decisions (case_id, id);

-- Deliveries to units. message_id is the key units deduplicate on; it is derived from the
-- case, the unit, the role and the assignment's sequence, so a retry can never mint a second
-- id for the same delivery.
CREATE TABLE assignments (
    id          bigserial PRIMARY KEY,
    case_id     uuid NOT NULL REFERENCES cases (id) ON DELETE CASCADE,
    unit        text NOT NULL,
    role        text NOT NULL,
    message_id  uuid NOT NULL UNIQUE,
    assigned_at timestamptz NOT NULL,
    active      boolean NOT NULL DEFAULT true
);
CREATE INDEX assignments_by_case ON assignments (case_id);

CREATE TABLE idempotency_keys (
    key            text PRIMARY KEY,
    request_sha256 bytea NOT NULL,
    case_id        uuid NOT NULL REFERENCES cases (id),
    created_at     timestamptz NOT NULL
);

-- Transactional outbox: written in the same transaction as the state change that causes the
-- messages, published by a relay with publisher confirms, deleted once confirmed.
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    message_id  uuid NOT NULL,
    exchange    text NOT NULL,
    routing_key text NOT NULL,
    headers     jsonb NOT NULL DEFAULT '{}',
    payload     bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION lapor_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('lapor_outbox', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION lapor_outbox_notify();

-- Inbox: message ids each consumer has handled, recorded in the transaction of its effect.
CREATE TABLE inbox (
    consumer   text NOT NULL,
    message_id uuid NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX inbox_by_age ON inbox (handled_at);

-- Messages that can never be processed, with the reason, for an operator to read and re-drive.
CREATE TABLE parked_messages (
    id          bigserial PRIMARY KEY,
    parked_at   timestamptz NOT NULL DEFAULT now(),
    queue       text NOT NULL,
    exchange    text NOT NULL,
    routing_key text NOT NULL,
    message_id  text,
    reason      text NOT NULL,
    headers     jsonb NOT NULL DEFAULT '{}',
    payload     bytea NOT NULL,
    redriven_at timestamptz
);

-- The running stage clock of each open case, found by the monitor through the index on
-- next_check_at: its cost grows with what is due, not with what is open.
CREATE TABLE case_deadlines (
    case_id       uuid PRIMARY KEY REFERENCES cases (id) ON DELETE CASCADE,
    clock         text NOT NULL,
    cycle         int NOT NULL,
    holder_unit   text NOT NULL,
    zone          text NOT NULL,
    started_at    timestamptz NOT NULL,
    budget_secs   bigint NOT NULL,
    used_secs     bigint NOT NULL,
    running       boolean NOT NULL,
    due_at        timestamptz,
    next_check_at timestamptz,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX case_deadlines_due ON case_deadlines (next_check_at) WHERE next_check_at IS NOT NULL;

-- Every SLA notice once: the key makes a second replica's or a restarted monitor's attempt a
-- no-op.
CREATE TABLE sla_notices (
    case_id uuid NOT NULL REFERENCES cases (id) ON DELETE CASCADE,
    clock   text NOT NULL,
    cycle   int NOT NULL,
    notice  text NOT NULL,
    unit    text NOT NULL,
    sent_at timestamptz NOT NULL,
    PRIMARY KEY (case_id, clock, cycle, notice)
);
