"""The committed OpenAPI contract, which the service serves as it is.

The rules it states that the code enforces are in server/shared/contract_rules.py.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

# openapi/openapi.yaml, through the link beside this module, so that an installed package carries its own copy.
CONTRACT_PATH = Path(__file__).resolve().parent / "openapi.yaml"


@cache
def _load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not an OpenAPI document")
    return document


def load_contract(path: Path = CONTRACT_PATH) -> dict[str, Any]:
    """The contract document; read once per process, since it never changes while running."""
    return _load(path)
