-- A service reached at several URLs: each side's URLs, comma-separated as on
-- the command line, and the URL each attempt went to. A single URL is already
-- a valid one-item list, so renaming the columns is all the sagas need; older
-- attempts have no URL.
ALTER TABLE sagas RENAME COLUMN source_url TO source_urls;
ALTER TABLE sagas RENAME COLUMN target_url TO target_urls;
ALTER TABLE events ADD COLUMN url TEXT;
