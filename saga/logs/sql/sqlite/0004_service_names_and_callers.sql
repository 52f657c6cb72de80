-- Each side's service name (where the transfer named it), the API caller that
-- submitted the saga, and the index that lists sagas newest first.
ALTER TABLE sagas ADD COLUMN source_service TEXT;
ALTER TABLE sagas ADD COLUMN target_service TEXT;
ALTER TABLE sagas ADD COLUMN submitted_by TEXT;

CREATE INDEX sagas_newest_first ON sagas (created_at_ms, transaction_id);
