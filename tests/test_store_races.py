"""Writers that race, on both backends: another connection commits a change between what a write transaction
reads and what it writes from that (on PostgreSQL, read committed, writers run side by side; on DuckDB the file
lock keeps other processes out, so the tests force the interleaving in-process). The write must see the other
side's change and decide again: a worker claiming the oldest queued job while a lead cancels it or another worker
claims it; a new version of a dataset while another station stores the same version number; an account while
another admin adds the same name."""

from __future__ import annotations

import pytest

from visionqc.accounts import AccountError
from visionqc.datasets.archive import import_dataset
from visionqc.store import Store

pytestmark = pytest.mark.usefixtures("backend")  # on DuckDB and on PostgreSQL
PICK = "SELECT job_id FROM jobs WHERE status = 'queued'"
NEXT_VERSION = "SELECT coalesce(max(version), 0) + 1 FROM datasets"
TAKEN = "SELECT count(*) FROM users WHERE lower(username)"


class Meanwhile:
    """A store connection that runs ``meanwhile()`` (once, on another connection, committed) right after the
    transaction has run its statement starting with ``after``, and before its next one."""

    def __init__(self, con, after: str, meanwhile: list):
        self._con, self._after, self._meanwhile = con, after, meanwhile

    def execute(self, sql: str, *args):
        result = self._con.execute(sql, *args)
        if sql.startswith(self._after) and self._meanwhile:
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
    monkeypatch.setattr(worker, "_open", lambda read_only: Meanwhile(opening(read_only), PICK, change))
    claimed = worker.claim_next_job(pid=1)
    assert not change, "the other connection never ran"
    assert claimed is not None and claimed["job_id"] == second and claimed["pid"] == 1
    job = elsewhere.job(first)
    assert job["status"] == ("cancelled" if other == "a lead cancels it" else "running")
    assert job["pid"] == (None if other == "a lead cancels it" else 2)  # the other side's change stands


def test_a_dataset_version_taken_meanwhile_makes_the_next_one(tmp_path, monkeypatch, labelled_folder):
    """Two stations store a version of the dataset "line-2" at once: both read that version 1 is the next; the one
    committing second retries and stores version 2 (on PostgreSQL it failed with a raw unique-key error)."""
    folder = labelled_folder(tmp_path / "tiles", 2, ["crack", "free"])
    station, elsewhere = Store(tmp_path / "home"), Store(tmp_path / "home")
    change = [lambda: import_dataset(elsewhere, "line-2", folder, by="ben")]
    opening = station._open
    monkeypatch.setattr(station, "_open", lambda read_only: Meanwhile(opening(read_only), NEXT_VERSION, change))
    row, _ = import_dataset(station, "line-2", folder, by="ana")
    assert not change, "the other station never stored its version"
    assert (row["dataset_id"], row["created_by"]) == ("line-2@2", "ana")
    assert elsewhere.dataset("line-2@1")["created_by"] == "ben" and len(elsewhere.datasets()) == 2


@pytest.mark.parametrize("theirs", ["lea", "Lea"])
def test_an_account_added_meanwhile_under_the_same_name_is_refused_with_the_reason(tmp_path, monkeypatch, theirs):
    """Two admins add "lea" at once: the second is told the name is taken (on PostgreSQL: a raw unique-key error).
    Names differing only in case are the same name (on PostgreSQL both were stored, until migration 13)."""
    admin, other = Store(tmp_path / "home"), Store(tmp_path / "home")
    change = [lambda: other.add_user(theirs, "lead", "hash-of-the-other-admin")]
    opening = admin._open
    monkeypatch.setattr(admin, "_open", lambda read_only: Meanwhile(opening(read_only), TAKEN, change))
    with pytest.raises(AccountError, match="there is already an account named 'lea'"):
        admin.add_user("lea", "operator", "hash-of-this-admin")
    assert not change, "the other admin never added the account"
    assert (other.user(theirs)["role"], len(other.users())) == ("lead", 1)
