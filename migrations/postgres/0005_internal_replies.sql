-- A run asked for in an internal note (GitLab's confidential comment) on a merge
-- request answers there in internal notes too: 1, else NULL. Its public traces
-- (commit comments and statuses) are as for any run.
ALTER TABLE runs ADD COLUMN reply_internal BIGINT;
