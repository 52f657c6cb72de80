"""The accounts service: an idempotent, fenced ledger behind the OpenAPI contract."""

from server.app import create_app
from server.ledger import Ledger
from server.settings import Settings

__all__ = ["Ledger", "Settings", "create_app"]
