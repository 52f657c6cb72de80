"""How the transfers service is set up: its services, who may call it, and who may act as an operator."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from saga.directory import ServiceDirectory

#: The operator console signs its users in itself (a cookie or a bearer token; see saga/service/console.py).
CONSOLE_PREFIX: Final = "/ui"
#: How long a saga may stay COMPENSATING before the overview and the alerts call it stuck.
DEFAULT_STUCK_AFTER_SECONDS: Final = 60


@dataclass(frozen=True, slots=True)
class TransfersSettings:
    directory: ServiceDirectory
    #: Caller name -> its bearer token. No token of either kind: no authentication (loopback only; see serve).
    api_tokens: Mapping[str, str] = field(default_factory=dict)
    #: Operator name -> its bearer token: what a caller may do, plus cancel, retry and resolve.
    operator_tokens: Mapping[str, str] = field(default_factory=dict)
    max_body_bytes: int = 64 * 1024
    #: The accounts services' bearer token, for the console's reads of their audit trails.
    bank_token: str | None = None
    #: A saga COMPENSATING for longer than this (since its creation) is stuck.
    stuck_after_seconds: int = DEFAULT_STUCK_AFTER_SECONDS

    def __post_init__(self) -> None:
        secrets = [*self.api_tokens.values(), *self.operator_tokens.values()]
        if len(set(secrets)) != len(secrets):
            raise ValueError("two callers or operators have the same token: a token must name one of them")
        if any(not secret for secret in secrets):
            raise ValueError("a token must not be empty")
        if set(self.api_tokens) & set(self.operator_tokens):
            raise ValueError("a name is either a caller's or an operator's, not both")

    @property
    def authenticated(self) -> bool:
        """Whether every request (but the public paths) needs a token."""
        return bool(self.api_tokens or self.operator_tokens)


Role = Literal["caller", "operator"]


class TokenBook:
    """Every bearer token the service knows, with the name and role each one stands for."""

    def __init__(self, settings: TransfersSettings) -> None:
        self.entries: list[tuple[bytes, str, Role]] = [
            *((secret.encode(), name, "caller") for name, secret in settings.api_tokens.items()),
            *((secret.encode(), name, "operator") for name, secret in settings.operator_tokens.items()),
        ]

    def derived_key(self, purpose: bytes) -> bytes:
        """A key that every process given the same tokens derives alike, and no one without them can."""
        digest = hashlib.sha256(purpose)
        for secret, name, role in sorted(self.entries):
            digest.update(b"\x00".join((role.encode(), name.encode(), secret)) + b"\x01")
        return digest.digest()

    def __bool__(self) -> bool:
        return bool(self.entries)

    def identify(self, token: bytes) -> tuple[str, Role] | None:
        """The (name, role) ``token`` stands for, or None."""
        found = None
        for secret, name, role in self.entries:
            # Every token is compared, so the time taken does not tell which one came close.
            if hmac.compare_digest(token, secret):
                found = (name, role)
        return found

    def bearer(self, headers: list[tuple[bytes, bytes]]) -> tuple[str, Role] | None:
        """Who the request's one ``Authorization: Bearer`` header names, or None."""
        presented = [value for name, value in headers if name == b"authorization"]
        if len(presented) != 1:
            return None
        scheme, _, credentials = presented[0].partition(b" ")
        if scheme.lower() != b"bearer":
            return None
        return self.identify(credentials.strip(b" "))
