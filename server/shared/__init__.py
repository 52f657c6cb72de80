"""Helpers both programs share: the accounts service and the saga read database URLs and write log lines alike."""
