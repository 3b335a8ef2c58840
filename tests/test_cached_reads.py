"""The pages' read cache: a repeated read opens no connection, and any commit (by any process) is seen."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from visionqc.config import PROJECT_ROOT
from visionqc.filters import InspectionFilter
from visionqc.store import Store
from visionqc.ui.cached import CachedStore


@pytest.fixture
def store(tmp_path):
    spec = importlib.util.spec_from_file_location("vq_seed", PROJECT_ROOT / "benchmarks" / "seed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.seed_inspections(tmp_path / "home", 300, days=10)


@pytest.fixture
def opens(monkeypatch):
    """How many times a connection to the database file was opened."""
    counter = {"n": 0}
    original = Store._open

    def counting(self, read_only):
        counter["n"] += 1
        return original(self, read_only)

    monkeypatch.setattr(Store, "_open", counting)
    return counter


def test_a_repeated_read_opens_no_connection(store, opens):
    cached = CachedStore(store)
    crack = InspectionFilter(defects=("crack",))
    first = cached.search(crack, sort="confidence", page_size=25)
    count = cached.count(crack)
    options = cached.distinct_values("defect")
    before = opens["n"]
    again = cached.search(crack, sort="confidence", page_size=25)
    assert opens["n"] == before, "answered from the cache"
    assert cached.count(crack) == count and cached.distinct_values("defect") == options
    assert again[0].equals(first[0]) and again[1] == first[1] == count
    # Another question is another read; the answer matches the store's own.
    cached.search(crack, sort="file_name", page_size=25)
    assert opens["n"] == before + 1
    assert cached.count(InspectionFilter(defects=("fray",))) == store.count(InspectionFilter(defects=("fray",)))


def test_a_write_by_this_process_is_seen_at_once(store):
    cached = CachedStore(store)
    crack = InspectionFilter(defects=("crack",))
    rows, total = cached.search(crack, page_size=10)
    deleted = [int(i) for i in rows["inspection_id"][:3]]
    cached.soft_delete(deleted, "ana")  # a write goes to the store itself
    assert cached.count(crack) == total - 3
    assert not set(deleted) & set(cached.search(crack, page_size=10)[0]["inspection_id"])


def test_a_commit_by_another_process_is_seen(store):
    cached = CachedStore(store)
    everything = cached.count()
    rows, _ = cached.search(InspectionFilter(), page_size=5)
    ids = [int(i) for i in rows["inspection_id"]]
    code = f"import sys; from visionqc.store import Store; Store(sys.argv[1]).soft_delete({ids}, 'other station')"
    subprocess.run([sys.executable, "-c", code, str(store.home)], check=True, cwd=PROJECT_ROOT, timeout=120)
    assert cached.count() == everything - 5
    assert not set(ids) & set(cached.search(InspectionFilter(), page_size=50)[0]["inspection_id"])


def test_whole_results_and_other_methods_pass_straight_through(store, opens):
    cached = CachedStore(store)
    cached.search(InspectionFilter(), page_size=0)
    before = opens["n"]
    rows, total = cached.search(InspectionFilter(), page_size=0)  # an export's whole result: never kept
    assert opens["n"] == before + 1 and len(rows) == total == 300
    assert cached.home == store.home and cached.read_only is False
