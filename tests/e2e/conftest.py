"""Browser end-to-end fixtures: a real `streamlit run` server and headless Debian Chromium driven by Playwright.

Reusable by every page's e2e test:

- ``app_server`` (module scope): starts ``streamlit run streamlit_app.py`` on a free port with a fresh
  temporary ``VISIONQC_HOME``; yields an :class:`AppServer` (``url``, ``home``, ``log``); kills it afterwards.
- ``start_app_server(home, env=...)``: the same as a context manager, for tests that need their own server
  (the ``app_server_at`` fixture hands it to a test module).
- ``browser`` (session scope) and ``page`` (function scope, 1400×1000, downloads allowed).
- ``wait_for_app`` (fixture): ``wait_for_app(page)`` waits until Streamlit has finished running the script.
- ``screenshot_dir``: where to write screenshots (the test's tmp_path unless ``VISIONQC_SCREENSHOTS`` is set).

The server inherits the environment, so ``VISIONQC_MODEL`` picks the model (default: the shipped one).

The whole folder is skipped, with the reason, when /usr/bin/chromium is absent
(install it with ``apt-get install -y chromium``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from visionqc import config

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PROJECT_ROOT = config.PROJECT_ROOT
STARTUP_TIMEOUT_S = 90.0


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@dataclass
class AppServer:
    url: str
    home: Path
    log: Path
    process: subprocess.Popen

    def log_text(self) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200 and response.read().strip() == b"ok"
    except OSError:
        return False


@contextlib.contextmanager
def start_app_server(home: Path, env: dict[str, str] | None = None, unset: tuple[str, ...] = ()) -> Iterator[AppServer]:
    """Run ``streamlit run streamlit_app.py`` from the project root until the block ends, with ``env`` added to
    this process's environment and the variables named in ``unset`` left out."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    log = home.parent / f"streamlit-{port}.log"
    run_env = {**os.environ, "VISIONQC_HOME": str(home), "PYTHONUNBUFFERED": "1", **(env or {})}
    for name in unset:
        run_env.pop(name, None)
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "streamlit_app.py",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=run_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = AppServer(url=f"http://127.0.0.1:{port}", home=home, log=log, process=process)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _healthy(server.url):
            if process.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {process.returncode}:\n{server.log_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit was not healthy after {STARTUP_TIMEOUT_S:.0f} s:\n{server.log_text()}")
            time.sleep(0.25)
        yield server
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    # The server runs in its own session: signal its process group (it and only its children).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def app_server(tmp_path_factory) -> Iterator[AppServer]:
    """A running app with an empty data folder, shared by the tests of one module."""
    home = tmp_path_factory.mktemp("e2e") / "visionqc-data"
    with start_app_server(home) as server:
        yield server


@pytest.fixture(scope="session")
def app_server_at():
    """``with app_server_at(home) as server:`` runs the app on the data folder ``home`` (see ``start_app_server``)."""
    return start_app_server


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install -y chromium) for browser tests")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def _wait_for_app(page, timeout_ms: float = 60_000) -> None:
    # The app root carries the script state ("initial", "running", "notRunning", ...). A rerun caused by the
    # last click may not have started yet, so give it a moment before waiting for "notRunning".
    page.wait_for_timeout(400)
    page.wait_for_selector(
        "[data-testid='stApp'][data-test-script-state='notRunning']", state="attached", timeout=timeout_ms
    )
    # Elements the browser has not received yet are drawn as skeletons.
    page.wait_for_function("() => !document.querySelector(\"[data-testid='stSkeleton']\")", timeout=timeout_ms)


@pytest.fixture
def wait_for_app():
    """``wait_for_app(page, timeout_ms=60_000)``: wait until Streamlit has finished running the script."""
    return _wait_for_app


@pytest.fixture
def screenshot_dir(tmp_path) -> Path:
    """Where e2e tests write their screenshots: the test's own tmp_path, or $VISIONQC_SCREENSHOTS to keep them."""
    path = Path(os.environ.get("VISIONQC_SCREENSHOTS") or tmp_path / "screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path
