"""The layout's rules that import-linter cannot see: pages are scripts (not a package), module size, and which
pages can be imported without loading torch. The package rules themselves are import-linter contracts in
pyproject.toml, checked by `lint-imports` in the test command."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from visionqc.config import PROJECT_ROOT

PAGE_FILES = [*sorted((PROJECT_ROOT / "pages").glob("*.py")), PROJECT_ROOT / "streamlit_app.py"]
# What a page may never import itself: database drivers and tensor libraries live below the UI.
FORBIDDEN_IN_PAGES = {"duckdb", "psycopg", "torch", "torchvision", "onnxruntime", "safetensors", "numpy"}
MAX_MODULE_LINES = 550


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module)
    return roots


@pytest.mark.parametrize("page", PAGE_FILES, ids=lambda p: p.name)
def test_pages_import_no_driver_and_no_tensors(page):
    roots = {name.split(".")[0] for name in imported_roots(page)}
    assert not roots & FORBIDDEN_IN_PAGES, f"{page.name} imports {sorted(roots & FORBIDDEN_IN_PAGES)}"


def test_only_the_ui_and_pages_mention_streamlit():
    offenders = [
        str(path.relative_to(PROJECT_ROOT))
        for path in (PROJECT_ROOT / "visionqc").rglob("*.py")
        if "ui" not in path.relative_to(PROJECT_ROOT / "visionqc").parts[:1]
        and any(name.split(".")[0] == "streamlit" for name in imported_roots(path))
    ]
    assert offenders == []


def test_no_module_grows_past_the_size_one_can_hold_in_mind():
    sizes = {
        str(path.relative_to(PROJECT_ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for path in (PROJECT_ROOT / "visionqc").rglob("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def loads_torch(*modules: str) -> bool:
    """Whether importing ``modules`` in a fresh interpreter loads torch."""
    code = f"import sys\nimport {', '.join(modules)}\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT)
    return out.stdout.strip().splitlines()[-1] == "True"


def test_read_only_pages_load_without_torch():
    """History, the Dashboard and Explore read the store; importing what they use must not load the network."""
    assert not loads_torch(
        "visionqc.ui.history", "visionqc.ui.filters", "visionqc.ui.tables", "visionqc.ui.explore",
        "visionqc.store.analytics", "visionqc.reporting.dashboard", "visionqc.reporting.exports",
    )  # fmt: skip


def test_the_registry_datasets_and_job_queue_load_without_torch():
    """The Models page's tables, the sidebar and `python -m visionqc dataset|model list|jobs` never pay for the
    network: only training, comparing and registering (which checks the weights) import torch, when they run."""
    assert not loads_torch(
        "visionqc.registry", "visionqc.jobs.queue", "visionqc.jobs.training_job", "visionqc.jobs.compare",
        "visionqc.datasets.archive", "visionqc.datasets.building", "visionqc.datasets.export",
        "visionqc.ui.training_view", "visionqc.ui.datasets_view", "visionqc.ui.registry_view", "visionqc.ui.sidebar",
    )  # fmt: skip
    assert loads_torch("visionqc.training.trainer")  # the check can fail


def test_every_page_refuses_to_run_outside_the_app_navigation():
    """Streamlit serves pages/ on its own until the entry script has run once after a start: a page's first
    statement sends such a run to the entry script (and its sign-in gate). tests/e2e/test_sign_in.py shows why."""
    from visionqc.ui.pages import page_specs

    for spec in page_specs():
        tree = ast.parse(Path(spec.path).read_text(encoding="utf-8"))
        body = [node for node in tree.body if not isinstance(node, ast.Import | ast.ImportFrom)]
        first = body[1] if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else body[0]
        assert ast.unparse(first) == "pages.through_the_app(__file__)", f"{spec.path} starts with {ast.unparse(first)}"
