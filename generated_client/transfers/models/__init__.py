"""Contains all the data models used in inputs/outputs"""

from .account_at import AccountAt
from .action_kind import ActionKind
from .error_code import ErrorCode
from .event_kind import EventKind
from .health import Health
from .health_status import HealthStatus
from .operator_action_request import OperatorActionRequest
from .problem import Problem
from .resolution import Resolution
from .resolve_request import ResolveRequest
from .transfer import Transfer
from .transfer_account import TransferAccount
from .transfer_event import TransferEvent
from .transfer_event_step import TransferEventStep
from .transfer_events import TransferEvents
from .transfer_page import TransferPage
from .transfer_request import TransferRequest
from .transfer_state import TransferState

__all__ = (
    "AccountAt",
    "ActionKind",
    "ErrorCode",
    "EventKind",
    "Health",
    "HealthStatus",
    "OperatorActionRequest",
    "Problem",
    "Resolution",
    "ResolveRequest",
    "Transfer",
    "TransferAccount",
    "TransferEvent",
    "TransferEventStep",
    "TransferEvents",
    "TransferPage",
    "TransferRequest",
    "TransferState",
)
