"""Configuration of one accounts service."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from server.ledger import MAX_BALANCE, valid_balance
from server.shared.contract_rules import USER_ID, USER_ID_RULE
from server.shared.database_url import DatabaseUrl

DEMO_ACCOUNTS: Mapping[str, int] = MappingProxyType({"alice": 100_000, "bob": 100_000, "charlie": 100_000})
#: The brief's demo: about 30% of new credits fail with a 500, on the memory database only.
DEMO_CREDIT_FAULT_RATE = 0.3


class ConfigurationError(ValueError):
    """A setting is invalid; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    accounts: Mapping[str, int] = field(default_factory=lambda: dict(DEMO_ACCOUNTS))
    credit_fault_rate: float = DEMO_CREDIT_FAULT_RATE
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
    #: Operator name -> bearer token: accepted wherever ``token`` is, and the
    #: only credential that may open an account (POST /accounts).
    operator_tokens: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_accounts(self.accounts, allow_none=True)
        for name in ("credit_fault_rate", "credit_fault_after_commit_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ConfigurationError(f"{name} must be between 0 and 1, got {rate}")
        if self.max_body_bytes < 1:
            raise ConfigurationError(f"max_body_bytes must be at least 1, got {self.max_body_bytes}")
        if self.token is not None and not self.token:
            raise ConfigurationError("token must not be empty")
        secrets = list(self.operator_tokens.values())
        if any(not secret for secret in secrets) or any(not name for name in self.operator_tokens):
            raise ConfigurationError("an operator token is NAME=SECRET, both non-empty")
        if len(set(secrets)) != len(secrets) or self.token in secrets:
            raise ConfigurationError("two credentials have the same secret: each operator token must be its own")

    @property
    def accepted_tokens(self) -> tuple[str, ...] | None:
        """The bearer tokens a request may carry; None when the service asks for none."""
        if self.token is None:
            return None
        return (self.token, *self.operator_tokens.values())


def validate_accounts(accounts: Mapping[str, int], *, allow_none: bool = False) -> None:
    """Raise ConfigurationError unless every user_id and balance is valid.

    A service may start with no accounts (it opens them through POST
    /accounts); an accounts file that lists none is a mistake.
    """
    if not accounts and not allow_none:
        raise ConfigurationError("at least one account is needed")
    for user_id, balance in accounts.items():
        if not isinstance(user_id, str) or not USER_ID.fullmatch(user_id):
            raise ConfigurationError(f"user_id {user_id!r} must be {USER_ID_RULE}")
        if not valid_balance(balance):
            raise ConfigurationError(
                f"balance of {user_id!r} must be an integer number of minor units from 0 to {MAX_BALANCE}, "
                f"got {balance!r}"
            )


def parse_named_tokens(flags: list[str], option: str = "--operator-token") -> dict[str, str]:
    """``NAME=SECRET`` flags as name -> secret; ConfigurationError names the bad one."""
    tokens: dict[str, str] = {}
    for flag in flags:
        name, separator, secret = flag.partition("=")
        if not separator or not name or not secret:
            raise ConfigurationError(f"{option} expects NAME=SECRET, got {name or flag!r}=…")
        if name in tokens:
            raise ConfigurationError(f"{option} names {name!r} twice")
        tokens[name] = secret
    return tokens


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
