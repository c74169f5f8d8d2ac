-- Small facts the services keep about themselves, e.g. the fingerprint of the working-day
-- calendar and SLA policy that the open deadlines were computed with.
CREATE TABLE lapor_state (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL
);
