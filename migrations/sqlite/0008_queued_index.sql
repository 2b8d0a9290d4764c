-- The worker's index holds only the queued deliveries. It held every delivery by
-- (state, id): each one marked finished moved from the queued part of it to its
-- state's, two leaves written per mark besides the row, and the index grew with the
-- whole history. Now a mark only removes an entry, and inserts and removals meet in
-- the few leaves of the queue. Every query that looks deliveries up by state asks for
-- state = 'queued'; the listing by any state scans by id, as it did.
DROP INDEX deliveries_state_id;

CREATE INDEX deliveries_queued ON deliveries (state, id) WHERE state = 'queued';
