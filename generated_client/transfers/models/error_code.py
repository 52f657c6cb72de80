from enum import StrEnum


class ErrorCode(StrEnum):
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    INTERNAL_ERROR = "internal_error"
    INVALID_IDEMPOTENCY_KEY = "invalid_idempotency_key"
    INVALID_REQUEST = "invalid_request"
    LOG_UNAVAILABLE = "log_unavailable"
    MISSING_IDEMPOTENCY_KEY = "missing_idempotency_key"
    OPERATOR_ONLY = "operator_only"
    REQUEST_HEADER_TOO_LARGE = "request_header_too_large"
    REQUEST_TOO_LARGE = "request_too_large"
    SERVICE_OVERLOADED = "service_overloaded"
    SERVICE_QUARANTINED = "service_quarantined"
    TRANSFER_ALREADY_ENDED = "transfer_already_ended"
    TRANSFER_IN_PROGRESS = "transfer_in_progress"
    TRANSFER_NOT_AWAITING_OPERATOR = "transfer_not_awaiting_operator"
    TRANSFER_NOT_RETRYABLE = "transfer_not_retryable"
    UNAUTHORIZED = "unauthorized"
    UNKNOWN_SERVICE = "unknown_service"
    UNKNOWN_TRANSFER = "unknown_transfer"

    def __str__(self) -> str:
        return str(self.value)
