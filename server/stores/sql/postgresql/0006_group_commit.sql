-- Group commit: the operations that arrive while a group is in flight go to
-- the database together, in one call, one transaction and one commit, each
-- decided by ledger_execute() as before and rolled back alone if it fails.
-- ledger_execute() and the tables are unchanged; a replica still on the
-- previous code calls ledger_execute_with_position() one operation at a time
-- and takes the same locks in the same order, so both can share a database.

\ir functions/ledger_execute_group.sql
