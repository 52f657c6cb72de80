"""The accounts service: an idempotent, fenced ledger behind the OpenAPI contract."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.app import create_app
    from server.ledger import Ledger
    from server.settings import Settings

__all__ = ["Ledger", "Settings", "create_app"]

_HOMES = {"create_app": "server.app", "Ledger": "server.ledger", "Settings": "server.settings"}


def __getattr__(name: str) -> Any:
    # Imported on first use: the saga imports server.shared.logformat and server.shared.database_url,
    # and must not pay for the web framework (about 0.4 s at every start) to do so.
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'server' has no attribute {name!r}")
