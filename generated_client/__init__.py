"""Typed clients made from the contracts in openapi/ by `make generate`; never edited by hand.

- generated_client.accounts: the accounts service (openapi/openapi.yaml)
- generated_client.transfers: the transfers service (openapi/transfers.yaml)
"""
