-- Bodies are stored LZ4-compressed (lz4_flex's block format, uncompressed size
-- first): webhook JSON shrinks to about a quarter, and so do the bytes every
-- delivery writes through the write-ahead log and copies into the database at
-- each checkpoint. New rows keep body = '' and the bytes in packed; rows from
-- before this migration keep their text in body and packed NULL.
ALTER TABLE delivery_bodies ADD COLUMN packed BYTEA;
