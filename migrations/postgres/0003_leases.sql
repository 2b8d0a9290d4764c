-- Leases let several hoist replicas share one database. A lease is held by one
-- replica (owner) until lease_until (milliseconds since the epoch) unless renewed;
-- fence grows with every new holder, and a holder checks its fence before each
-- side effect, so a replica that lost its lease (paused, partitioned) stops.
-- Names: "env:PROJECT:ENV" (the one run of an environment, with its run_id) and
-- "outbox" (the one sender of GitLab writes, which keeps their order).
CREATE TABLE leases (
    name        TEXT   PRIMARY KEY,
    owner       TEXT   NOT NULL,
    fence       BIGINT NOT NULL,
    lease_until BIGINT NOT NULL,
    run_id      BIGINT
);

-- A queued delivery claimed by a replica's worker.
ALTER TABLE deliveries ADD COLUMN lease_owner TEXT;
ALTER TABLE deliveries ADD COLUMN lease_until BIGINT;
