"""Helpers both programs share.

The accounts service and the saga read database URLs, write log lines, keep
to the contract's rules and migrate their SQL schemas alike.
"""
