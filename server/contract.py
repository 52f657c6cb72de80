"""The committed OpenAPI contract, which the service serves as it is, and the rules it states.

Each rule the code enforces is written here once, for the service, the saga
and the tests to read; tests/unit/test_contract_rules.py checks each against
the contract's own text.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any, Final

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


TRANSACTION_ID_MAX_LENGTH: Final = 128
TRANSACTION_ID_PATTERN: Final = r"^[A-Za-z0-9._:-]{1,128}$"
#: For ``fullmatch``, which, unlike ``match``, lets no final newline through the "$".
TRANSACTION_ID: Final = re.compile(TRANSACTION_ID_PATTERN)
TRANSACTION_ID_RULE: Final = "1-128 characters of A-Z a-z 0-9 . _ : -"

USER_ID_MAX_LENGTH: Final = 64
USER_ID_PATTERN: Final = r"^[A-Za-z0-9_.-]{1,64}$"
USER_ID: Final = re.compile(USER_ID_PATTERN)
USER_ID_RULE: Final = "1-64 characters of A-Z a-z 0-9 _ . -"

#: The largest amount one debit or credit moves, in minor units.
MAX_AMOUNT: Final = 10**12
