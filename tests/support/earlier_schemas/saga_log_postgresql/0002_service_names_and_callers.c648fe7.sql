-- Each side's service name (where the transfer named it, as the transfers
-- service does), the API caller that submitted the saga, and the index that
-- lists sagas newest first.

ALTER TABLE saga_sagas
    ADD COLUMN source_service text,
    ADD COLUMN target_service text,
    ADD COLUMN submitted_by text;

-- Ids sort byte by byte (COLLATE "C"), as the listing compares them.
CREATE INDEX saga_sagas_newest_first ON saga_sagas (created_at_ms, transaction_id COLLATE "C");
