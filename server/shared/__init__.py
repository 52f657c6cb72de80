"""Helpers both programs share: the accounts service and the saga read database URLs, write log lines and keep to
the contract's rules alike."""
