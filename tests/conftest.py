"""Shared fixtures: where the real data and the shipped model live, and an isolated data directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pgserver
import pytest

from visionqc import config

# The longest test files first (seconds of work per file in one run's --durations, 2026-12-06, largest first). Two
# workers each take a whole file at a time (scripts/test.sh: --dist loadfile, --no-loadscope-reorder); a long file
# handed out last keeps one worker busy after the other has run out of work. xdist's own order (the files with the
# most tests first) handed out the single-test browser files last: the suite's last minutes ran one of them alone.
SLOWEST_FILES = (
    "tests/test_jobs.py",  # 145 s
    "tests/e2e/test_model_loop.py",  # 62-121
    "tests/e2e/test_anomaly_start.py",  # 45-70
    "tests/test_counts.py",  # 66
    "tests/test_page_models.py",  # 65
    "tests/e2e/test_trust.py",  # 64
    "tests/test_anomaly.py",  # 63
    "tests/test_filelock.py",  # 50-70
    "tests/test_page_history.py",  # 48
    "tests/test_store.py",  # 46
    "tests/test_cli_models.py",  # 45
    "tests/test_training.py",  # 44
    "tests/e2e/test_faults.py",  # 40
    "tests/e2e/test_inspect_history.py",  # 38
    "tests/e2e/test_sign_in.py",  # 36
    "tests/test_compare_reinspect.py",  # 35
)


def pytest_collection_modifyitems(items):
    """The files of :data:`SLOWEST_FILES` first, in that order; every other file after them as collected (the sort
    is stable, so the tests of a file keep their order)."""
    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


SHARED_DATA = config.SHARED_DATA


def shared_dataset(name: str) -> Path:
    """Path to ../shared/data/<name>, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real images not available: {path} is absent (CI provides ../shared/data)")
    return path


@pytest.fixture(scope="session")
def magnetic_tile() -> Path:
    return shared_dataset("magnetic-tile")


@pytest.fixture(scope="session")
def neu_det() -> Path:
    return shared_dataset("neu-det")


@pytest.fixture(scope="session")
def elpv() -> Path:
    return shared_dataset("elpv")


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    path = config.DEFAULT_MODEL_DIR
    assert (path / "model.json").is_file(), f"the shipped model is missing from {path}"
    return path


@pytest.fixture
def visionqc_home(tmp_path, monkeypatch) -> Path:
    """An empty data directory, set as VISIONQC_HOME for the test."""
    home = tmp_path / "visionqc-data"
    monkeypatch.setenv("VISIONQC_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tile_photos(magnetic_tile):
    """``tile_photos(n, offset=0)``: ``n`` real magnetic-tile photos, the classes in turn, deterministic."""
    classes = sorted(p for p in (magnetic_tile / "images").iterdir() if p.is_dir())

    def pick(n: int, offset: int = 0) -> list[Path]:
        out = []
        for i in range(n):
            files = sorted(classes[(i + offset) % len(classes)].glob("*.jpg"))
            out.append(files[(i + offset) // len(classes) % len(files)])
        return out

    return pick


@pytest.fixture
def private_home(tmp_path, monkeypatch, default_model_dir):
    """Make a private copy of a seeded data folder and point the app at it (and at the shipped model).

    Seeding with the real model is slow, so page tests seed once per module and each test works on its own
    copy: a test that changes rows never disturbs the others.
    """

    def make(seeded: Path) -> Path:
        copy = tmp_path / "visionqc-data"
        shutil.copytree(seeded, copy)
        monkeypatch.setenv("VISIONQC_HOME", str(copy))
        monkeypatch.setenv("VISIONQC_MODEL", str(default_model_dir))
        return copy

    return make


@pytest.fixture(scope="session")
def labelled_folder(magnetic_tile):
    """``labelled_folder(root, per_class, classes=None)``: class folders ``root/<class>/*.jpg`` of real
    magnetic-tile photos (copies, ``per_class`` of each class, all six classes unless named), the layout
    ``train`` and ``dataset import`` read."""

    def make(root: Path, per_class: int, classes: list[str] | None = None) -> Path:
        names = classes or sorted(p.name for p in (magnetic_tile / "images").iterdir() if p.is_dir())
        for name in names:
            (root / name).mkdir(parents=True, exist_ok=True)
            for image in sorted((magnetic_tile / "images" / name).glob("*.jpg"))[:per_class]:
                shutil.copyfile(image, root / name / image.name)
        return root

    return make


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server (tests/pgserver.py) for the whole run, stopped at the end."""
    if pgserver.binaries() is None:
        pytest.skip("PostgreSQL is not installed (scripts/test.sh installs Debian's postgresql package)")
    server = pgserver.start()
    yield server
    server.stop()


@pytest.fixture(params=["duckdb", "postgresql"])
def backend(request, monkeypatch) -> str:
    """Run the test once on the embedded DuckDB file and once on PostgreSQL (``VISIONQC_DATABASE_URL`` set to a
    new, empty schema of the throwaway server). Use it with ``pytestmark = pytest.mark.usefixtures("backend")``;
    a test marked ``duckdb_only`` (the file itself: its lock, its format) runs on DuckDB alone."""
    if request.param == "postgresql":
        marker = request.node.get_closest_marker("duckdb_only")
        if marker is not None:
            pytest.skip(f"DuckDB file only: {marker.args[0] if marker.args else 'the embedded file itself'}")
        monkeypatch.setenv("VISIONQC_DATABASE_URL", request.getfixturevalue("postgres_server").new_schema_url())
    else:
        monkeypatch.delenv("VISIONQC_DATABASE_URL", raising=False)
    return request.param


@pytest.fixture(scope="module", params=["duckdb", "postgresql"])
def new_database(request):
    """For module-scoped stores: ``new_database()`` is ``None`` (a DuckDB file under the home given) in the first
    run of the module and the URL of a new, empty PostgreSQL schema in the second; use it as
    ``Store(home, url=new_database())``, one call per store."""
    if request.param == "duckdb":
        return lambda: None
    return request.getfixturevalue("postgres_server").new_schema_url


@pytest.fixture
def private_postgres_home(private_home, monkeypatch, postgres_server):
    """``private_postgres_home(seeded_home, seeded_url)``: what ``private_home`` does (a private copy of the data
    folder: the images), plus a private clone of the module's seeded PostgreSQL database, set as
    ``VISIONQC_DATABASE_URL``: a page test that changes rows never disturbs the others, on either backend."""

    def make(seeded: Path, url: str) -> Path:
        home = private_home(seeded)
        monkeypatch.setenv("VISIONQC_DATABASE_URL", postgres_server.clone(url))
        return home

    return make


@pytest.fixture(scope="module")
def seeded_postgres(seeded_home, postgres_server) -> str:
    """The URL of a PostgreSQL database holding the rows of the module's ``seeded_home`` (seeded once, on
    DuckDB, and copied by ``COPY``); ``home`` gives each test a clone of it."""
    from visionqc.store import Store

    url = postgres_server.new_database_url()
    pgserver.copy_to_postgres(Store(seeded_home), url)
    return url


@pytest.fixture
def home(request, private_home) -> Path:
    """For a page-test module that defines a module-scoped ``seeded_home``: a private copy of it, set as
    ``VISIONQC_HOME`` (and the shipped model as ``VISIONQC_MODEL``). Parametrised indirectly with
    ``"postgresql"`` (``apptest.BOTH_BACKENDS``), the copy's rows live in a private clone of ``seeded_postgres``
    instead, set as ``VISIONQC_DATABASE_URL``; a test marked ``duckdb_only`` is skipped there."""
    seeded = request.getfixturevalue("seeded_home")
    if getattr(request, "param", "duckdb") == "postgresql":
        marker = request.node.get_closest_marker("duckdb_only")
        if marker is not None:
            pytest.skip(f"DuckDB file only: {marker.args[0] if marker.args else 'the embedded file itself'}")
        return request.getfixturevalue("private_postgres_home")(seeded, request.getfixturevalue("seeded_postgres"))
    return private_home(seeded)
