-- An audit record is kept for good.
CREATE OR REPLACE FUNCTION account_openings_refuse_change() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'account_openings is append-only';
END;
$$;
