from enum import StrEnum


class ErrorCode(StrEnum):
    ACCOUNT_EXISTS = "account_exists"
    BALANCE_LIMIT_EXCEEDED = "balance_limit_exceeded"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    INJECTED_FAULT = "injected_fault"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    INTERNAL_ERROR = "internal_error"
    INVALID_REQUEST = "invalid_request"
    INVALID_TRANSACTION_ID = "invalid_transaction_id"
    MISSING_TRANSACTION_ID = "missing_transaction_id"
    OPERATOR_ONLY = "operator_only"
    REQUEST_HEADER_TOO_LARGE = "request_header_too_large"
    REQUEST_TOO_LARGE = "request_too_large"
    REVERSAL_EXCEEDS_BALANCE_LIMIT = "reversal_exceeds_balance_limit"
    SERVICE_OVERLOADED = "service_overloaded"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    TRANSACTION_COMPENSATED = "transaction_compensated"
    TRANSFER_COMPLETED = "transfer_completed"
    UNAUTHORIZED = "unauthorized"
    UNKNOWN_USER = "unknown_user"

    def __str__(self) -> str:
        return str(self.value)
