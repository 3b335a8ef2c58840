"""The store layer: schema and migrations, the query builder, ingest, analytics and the image folder.

The only package that imports a database driver. Everything above it talks to :class:`Store`.
"""

from visionqc.store.errors import (
    StoreBusyError,
    StoreCorruptError,
    StoreError,
    StoreReadOnlyError,
    StoreSpaceError,
)
from visionqc.store.records import DuplicateRecord, FailureRecord, InspectionRecord, utc_now
from visionqc.store.store import Store

__all__ = [
    "DuplicateRecord",
    "FailureRecord",
    "InspectionRecord",
    "Store",
    "StoreBusyError",
    "StoreCorruptError",
    "StoreError",
    "StoreReadOnlyError",
    "StoreSpaceError",
    "utc_now",
]
