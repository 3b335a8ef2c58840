"""The jobs table under concurrent writers, on both backends: a worker claims the oldest queued job while
another connection changes it (a lead cancels it, or another worker claims it first). The claim must see the
other side's committed change and take the next queued job, never run a cancelled job or one already running."""

from __future__ import annotations

import pytest

from visionqc.store import Store

pytestmark = pytest.mark.usefixtures("backend")  # on DuckDB and on PostgreSQL
PICK = "SELECT job_id FROM jobs WHERE status = 'queued'"


class Meanwhile:
    """A store connection that runs ``meanwhile()`` (once, on another connection, committed) right after the claim
    has read which job is the oldest queued one, and before it marks that job running."""

    def __init__(self, con, meanwhile: list):
        self._con, self._meanwhile = con, meanwhile

    def execute(self, sql: str, *args):
        result = self._con.execute(sql, *args)
        if sql.startswith(PICK) and self._meanwhile:
            self._meanwhile.pop()()
        return result

    def __getattr__(self, name):
        return getattr(self._con, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._con.__exit__(*exc) if hasattr(self._con, "__exit__") else None


@pytest.mark.parametrize("other", ["a lead cancels it", "another worker claims it"])
def test_a_job_changed_while_a_worker_claims_it_is_not_claimed_again(tmp_path, monkeypatch, other):
    home = tmp_path / "home"
    worker, elsewhere = Store(home), Store(home)
    first = worker.add_job("train", {"name": "first"}, created_by="ana")
    second = worker.add_job("train", {"name": "second"}, created_by="ana")
    if other == "a lead cancels it":
        change = [lambda: elsewhere.finish_job(first, "cancelled", error="cancelled", from_states=("queued",))]
    else:
        change = [lambda: elsewhere.claim_next_job(pid=2)]
    opening = worker._open
    monkeypatch.setattr(worker, "_open", lambda read_only: Meanwhile(opening(read_only), change))
    claimed = worker.claim_next_job(pid=1)
    assert not change, "the other connection never ran"
    assert claimed is not None and claimed["job_id"] == second and claimed["pid"] == 1
    job = elsewhere.job(first)
    assert job["status"] == ("cancelled" if other == "a lead cancels it" else "running")
    assert job["pid"] == (None if other == "a lead cancels it" else 2)  # the other side's change stands
