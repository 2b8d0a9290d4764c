-- The SQLite intake's key index, apart from the deliveries table (docs/webhooks.md,
-- "Duplicates"). GitLab's keys are random UUIDs: inserted one by one into the unique
-- index on deliveries.dedupe_key, each lands on a random leaf, a page written per
-- delivery. The SQLite intake leaves dedupe_key empty on new rows, keeps their keys
-- in memory, and adds them here in runs sorted by key, many keys to a page.
-- PostgreSQL (several replicas insert at once) keeps deduplicating by dedupe_key's
-- unique index; these tables stay empty there.
CREATE TABLE delivery_keys (
    key         TEXT   PRIMARY KEY,
    delivery_id BIGINT NOT NULL
);

-- keys_through: every delivery with an id up to this one that is not a duplicate has its
-- key in delivery_keys or in deliveries.dedupe_key; a restart reloads the keys of later
-- ones only. It starts past every delivery stored before this migration (their keys
-- are in dedupe_key).
CREATE TABLE intake_marks (
    name  TEXT   PRIMARY KEY,
    value BIGINT NOT NULL
);

INSERT INTO intake_marks (name, value) SELECT 'keys_through', COALESCE(MAX(id), 0) FROM deliveries;
