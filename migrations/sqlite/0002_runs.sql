-- Deploy runs, their steps, and the outbox of GitLab writes they cause.
CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    project       TEXT    NOT NULL,
    env           TEXT    NOT NULL,
    trigger       TEXT    NOT NULL,
    requested_by  TEXT,
    requester_id  BIGINT,
    ref_name      TEXT    NOT NULL,
    sha           TEXT    NOT NULL,
    tag           TEXT,
    pipeline_id   BIGINT,
    mr_iid        BIGINT,
    note_id       BIGINT,
    state         TEXT    NOT NULL,
    image         TEXT,
    digest        TEXT,
    error         TEXT,
    owner         TEXT,
    created_at    TEXT    NOT NULL,
    started_at    TEXT,
    finished_at   TEXT
);

CREATE INDEX runs_project_env ON runs (project, env, id);
CREATE INDEX runs_state ON runs (state, id);
-- At most one queued or running run per (project, env, commit).
CREATE UNIQUE INDEX runs_active_commit ON runs (project, env, sha) WHERE state IN ('queued', 'running');

CREATE TABLE run_steps (
    run_id      BIGINT  NOT NULL,
    position    INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    started_at  TEXT,
    finished_at TEXT,
    detail      TEXT,
    PRIMARY KEY (run_id, name)
);

-- GitLab writes (comments, statuses, replies, reactions), recorded in the same
-- transaction as the decision that causes them and sent afterwards.
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY,
    run_id     BIGINT,
    project    TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    error      TEXT,
    created_at TEXT    NOT NULL,
    sent_at    TEXT
);

CREATE INDEX outbox_pending ON outbox (state, id);
