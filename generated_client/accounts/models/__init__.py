"""Contains all the data models used in inputs/outputs"""

from .account import Account
from .account_list import AccountList
from .account_opening import AccountOpening
from .account_opening_status import AccountOpeningStatus
from .error_code import ErrorCode
from .ledger_request import LedgerRequest
from .ledger_result import LedgerResult
from .listed_account import ListedAccount
from .open_account_request import OpenAccountRequest
from .operation import Operation
from .outcome import Outcome
from .problem import Problem
from .trail_entry import TrailEntry
from .trail_entry_status import TrailEntryStatus
from .transaction_trail import TransactionTrail

__all__ = (
    "Account",
    "AccountList",
    "AccountOpening",
    "AccountOpeningStatus",
    "ErrorCode",
    "LedgerRequest",
    "LedgerResult",
    "ListedAccount",
    "OpenAccountRequest",
    "Operation",
    "Outcome",
    "Problem",
    "TrailEntry",
    "TrailEntryStatus",
    "TransactionTrail",
)
