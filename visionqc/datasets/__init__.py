"""Datasets made from what the store holds: reviewed inspections, imported labelled archives, merges of both;
their checks (classes too small to learn) and their export as a folder ``python -m visionqc train`` reads.

The store keeps each dataset as an immutable list of items (:mod:`visionqc.store.datasets`); this package builds
those lists and turns them back into files.
"""

from visionqc.datasets.checks import DatasetCheck, check_classes

__all__ = ["DatasetCheck", "check_classes"]
