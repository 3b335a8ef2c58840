"""The inspection store: one DuckDB file plus a content-addressed image folder under the data directory.

:class:`Store` is the one object the app, the command line and ingest talk to. Its methods live by concern:
connections, transactions and migrations in :mod:`~visionqc.store.database`, batches and ingest writes in
:mod:`~visionqc.store.batches`, reading inspections in :mod:`~visionqc.store.inspections`, reviews, tags and
scores in :mod:`~visionqc.store.reviews`, datasets in :mod:`~visionqc.store.datasets`, training jobs in
:mod:`~visionqc.store.jobs`, accounts in :mod:`~visionqc.store.users`. This package never imports torch.
"""

from __future__ import annotations

from visionqc.store.batches import BatchesMixin
from visionqc.store.database import Database
from visionqc.store.datasets import DatasetsMixin
from visionqc.store.inspections import InspectionsMixin
from visionqc.store.jobs import JobsMixin
from visionqc.store.reviews import ReviewsMixin
from visionqc.store.users import UsersMixin


class Store(BatchesMixin, InspectionsMixin, ReviewsMixin, DatasetsMixin, JobsMixin, UsersMixin, Database):
    """The inspection database under ``home`` (default: :func:`visionqc.config.data_dir`).

    Opening migrates the schema to :data:`~visionqc.store.schema.SCHEMA_VERSION`. No connection outlives a
    method call.
    """
