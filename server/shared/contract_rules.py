"""The rules the accounts contract (openapi/openapi.yaml) states, each written once.

The service, the saga and the tests read them here;
tests/in_process/test_contract_rules.py checks each against the contract's own text.
"""

from __future__ import annotations

import re
from typing import Final

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
