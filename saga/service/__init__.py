"""The transfers service: the saga orchestrator behind its own contract, openapi/transfers.yaml.

``python -m saga serve`` runs :func:`create_transfers_app` under uvicorn. A
``POST /transfers`` is :func:`saga.submission.submit`; ``GET …?wait=`` waits
for the saga's end; the events are the saga log's history. The sagas are
driven by the same :class:`~saga.worker.Worker` that ``saga worker`` runs,
in this process (SQLite, or PostgreSQL by default) or in others
(PostgreSQL, ``--no-drive``). Nothing here decides anything about money.
"""

from saga.service.app import create_transfers_app
from saga.service.settings import TransfersSettings

__all__ = ["TransfersSettings", "create_transfers_app"]
