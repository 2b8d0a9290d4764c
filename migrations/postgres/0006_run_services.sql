-- Every service a run deploys, with the image and digest its verify step resolved,
-- as a JSON array of {"service", "image" (with its tag), "digest"}. The image and
-- digest columns keep the first service's, as before; runs from before this
-- migration have NULL here (and are judged by their first image alone).
ALTER TABLE runs ADD COLUMN services TEXT;
