"""Contains all the data models used in inputs/outputs"""

from .account import Account
from .account_list import AccountList
from .error_code import ErrorCode
from .ledger_request import LedgerRequest
from .ledger_result import LedgerResult
from .operation import Operation
from .outcome import Outcome
from .problem import Problem
from .trail_entry import TrailEntry
from .trail_entry_status import TrailEntryStatus
from .transaction_trail import TransactionTrail

__all__ = (
    "Account",
    "AccountList",
    "ErrorCode",
    "LedgerRequest",
    "LedgerResult",
    "Operation",
    "Outcome",
    "Problem",
    "TrailEntry",
    "TrailEntryStatus",
    "TransactionTrail",
)
