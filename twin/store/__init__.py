"""Persistence: SQLAlchemy 2 typed tables and the one repository the service writes through.

    from twin.store import Store
    with Store.open("sqlite:///twin.db") as store:      # or postgresql+psycopg://user@host/db
        result = store.write_batch(batch)                # one transaction, idempotent

`twin.store.compact.compact` rolls old raw telemetry up into 1-minute rows; `twin.store.status.store_status`
reports counts, rejects and quiet nodes.
"""

from twin.store.repository import Store, WriteResult
from twin.store.urls import DEFAULT_DB_URL, StoreError, StoreUnavailable

__all__ = ["DEFAULT_DB_URL", "Store", "StoreError", "StoreUnavailable", "WriteResult"]
