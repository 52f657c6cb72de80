"""Configuration of one accounts service."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from server.database_url import DatabaseUrl
from server.ledger import MAX_BALANCE

USER_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
DEMO_ACCOUNTS: Mapping[str, int] = MappingProxyType({"alice": 100_000, "bob": 100_000, "charlie": 100_000})


class ConfigurationError(ValueError):
    """A setting is invalid; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    accounts: Mapping[str, int] = field(default_factory=lambda: dict(DEMO_ACCOUNTS))
    credit_fault_rate: float = 0.3
    credit_fault_after_commit_rate: float = 0.0
    fault_seed: int | None = None
    token: str | None = None
    log_requests: bool = True
    #: Where the ledger lives; the memory store forgets everything when the process ends.
    database: DatabaseUrl = field(default_factory=lambda: DatabaseUrl("memory"))
    #: Bodies over this many bytes are refused with 413 before they are read whole.
    max_body_bytes: int = 64 * 1024
    #: Named in every log line, so that the lines of several replicas can be told apart.
    replica_id: str | None = None
    #: With a token set, /metrics needs it too, unless this is true.
    metrics_public: bool = False

    def __post_init__(self) -> None:
        validate_accounts(self.accounts)
        for name in ("credit_fault_rate", "credit_fault_after_commit_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ConfigurationError(f"{name} must be between 0 and 1, got {rate}")
        if self.max_body_bytes < 1:
            raise ConfigurationError(f"max_body_bytes must be at least 1, got {self.max_body_bytes}")
        if self.token is not None and not self.token:
            raise ConfigurationError("token must not be empty")


def validate_accounts(accounts: Mapping[str, int]) -> None:
    if not accounts:
        raise ConfigurationError("at least one account is needed")
    for user_id, balance in accounts.items():
        if not isinstance(user_id, str) or not USER_ID_PATTERN.fullmatch(user_id):
            raise ConfigurationError(f"user_id {user_id!r} must be 1-64 characters of A-Z a-z 0-9 _ . -")
        if type(balance) is not int or not 0 <= balance <= MAX_BALANCE:
            raise ConfigurationError(
                f"balance of {user_id!r} must be an integer number of minor units from 0 to {MAX_BALANCE}, "
                f"got {balance!r}"
            )


def load_accounts(path: Path) -> dict[str, int]:
    """Read ``{"alice": 100000, ...}`` (minor units) from a JSON file."""
    try:
        accounts = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigurationError(f"cannot read accounts file {path}: {error.strerror}") from error
    except json.JSONDecodeError as error:
        raise ConfigurationError(f"accounts file {path} is not valid JSON: {error}") from error
    if not isinstance(accounts, dict):
        raise ConfigurationError(f"accounts file {path} must hold a JSON object of user_id to balance")
    validate_accounts(accounts)
    return accounts
