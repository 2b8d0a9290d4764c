-- Every webhook delivery hoist answered, in order of arrival.
-- Portable SQL: the PostgreSQL store runs the same statements (its id column
-- is given an identity default by its own first migration line when added).
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    idempotency_key TEXT    NOT NULL,
    -- equals idempotency_key on the first copy, NULL on duplicates: the unique
    -- index is what makes concurrent copies of one key collapse into one.
    dedupe_key      TEXT    UNIQUE,
    event           TEXT    NOT NULL,
    project         TEXT    NOT NULL,
    received_at     TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    summary         TEXT,
    run_id          BIGINT,
    processed_at    TEXT
);

CREATE INDEX deliveries_state_id ON deliveries (state, id);

-- Raw bodies live apart from the rows the worker updates, so marking a
-- delivery processed does not rewrite (and re-log) kilobytes of JSON.
CREATE TABLE delivery_bodies (
    delivery_id BIGINT PRIMARY KEY,
    body        TEXT   NOT NULL
);
