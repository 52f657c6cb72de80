-- The ledger's position, answered in the Ledger-Position header: a number that only grows.
--
-- It is the highest sequence of a recorded entry, 0 before the first. Read in
-- a statement of its own after the request's writes, it counts every entry
-- committed before the request arrived, so it is at least every position any
-- replica answered before. Entries are never deleted: only a database that
-- went back in time answers less (pg_restore of an older dump, a point-in-time
-- recovery, a failover to a replica that missed commits), and that is what a
-- client comparing it with the highest it saw looks for. The sequence's own
-- last_value would not do: it is logged up to 32 values ahead, so a database
-- that lost fewer entries than that could answer as much as before.
--
-- ledger_execute() keeps the rules and is not replaced here; the store calls
-- it through ledger_execute_with_position(), still one call per request.

\ir functions/current_ledger_position.sql
\ir functions/ledger_execute_with_position.sql
