"""Deterministic fault simulation of the transfer saga, after TigerBeetle's VOPR and Jepsen's bank test."""
