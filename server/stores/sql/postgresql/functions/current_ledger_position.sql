-- The ledger's position: the highest sequence of a recorded entry, 0 before
-- the first. Why that, and not the sequence's last_value: 0003_ledger_position.sql.

CREATE OR REPLACE FUNCTION current_ledger_position() RETURNS bigint
LANGUAGE sql
VOLATILE
AS $$
    SELECT coalesce(max(sequence), 0) FROM entries
$$;
