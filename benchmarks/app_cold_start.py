"""App cold start to a usable Inspect page, and the first inspection, per runtime, in one run.

    python3 benchmarks/app_cold_start.py [--repeats 3] [--baseline-app /path/to/older/checkout]

Each measurement starts a fresh ``streamlit run streamlit_app.py`` server (new process: nothing imported or
cached) with an empty data folder and the shipped model, and drives Debian's headless Chromium (Playwright):

- cold start: from launching the server to the Inspect page drawn with its file uploader and the script finished
  (the model loaded, ready to take files);
- first inspection: one real 1080p JPEG put on the uploader, "Inspect 1 file" pressed, to the batch's results;
- first heatmap: its row clicked, to the photo drawn with its heatmap (with an ONNX graph, the moment torch and
  the PyTorch network load).

Baseline (same run): the PyTorch runtime (``VISIONQC_RUNTIME=torch``), i.e. importing torch and building the
network as the app did before ONNX; with ``--baseline-app`` also an older checkout of the app, as it was.
Runs alternate between the configurations, and the median of ``--repeats`` is reported with the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from visionqc import config  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def photo_1080p() -> bytes:
    from PIL import Image

    source = sorted((config.SHARED_DATA / "magnetic-tile" / "images" / "blowhole").glob("*.jpg"))[0]
    buf = io.BytesIO()
    Image.open(source).convert("RGB").resize((1920, 1080)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def measure(browser, app_dir: Path, env: dict[str, str], photo: bytes) -> tuple[float, float, float]:
    """Seconds from launch to a usable Inspect page, for the first one-photo inspection, for its heatmap."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    home = Path(tempfile.mkdtemp(prefix="visionqc-cold-"))
    command = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port)]
    command += ["--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    run_env = {**os.environ, "VISIONQC_HOME": str(home), "VISIONQC_MODEL": str(config.DEFAULT_MODEL_DIR), **env}
    run_env.pop("PYTHONPATH", None)
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=app_dir, env=run_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        while not _healthy(url):
            if process.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {process.returncode}")
            time.sleep(0.05)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(180_000)
        page.goto(url)
        uploader = page.locator("[data-testid='stFileUploader'] input[type=file]").first
        uploader.wait_for(state="attached")
        page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", state="attached")
        cold = time.perf_counter() - started
        uploader.set_input_files([{"name": "photo.jpg", "mimeType": "image/jpeg", "buffer": photo}])
        ready = "() => [...document.querySelectorAll('button')].some(b => /Inspect 1 file/.test(b.innerText)"
        ready += " && !b.disabled)"
        page.wait_for_function(ready)
        clicked = time.perf_counter()
        page.get_by_role("button", name=re.compile(r"^Inspect 1 file")).click()
        page.get_by_role("heading", name=re.compile(r"^Batch ")).wait_for()
        first = time.perf_counter() - clicked
        grid = page.locator("[data-testid='stDataFrame']").filter(has_text="photo.jpg").last
        grid.scroll_into_view_if_needed()
        box = grid.bounding_box()
        clicked = time.perf_counter()
        page.mouse.click(box["x"] + 15, box["y"] + 36 + 32)  # the first row, under the header
        page.get_by_text(re.compile("heatmap for")).wait_for()
        heatmap = time.perf_counter() - clicked
        page.close()
        return cold, first, heatmap
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-app", type=Path, help="an older checkout of the app to measure as it was")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    configurations = {"torch runtime (baseline)": (ROOT, {"VISIONQC_RUNTIME": "torch"}), "default runtime": (ROOT, {})}
    if args.baseline_app:
        configurations = {"older checkout": (args.baseline_app.resolve(), {}), **configurations}
    photo = photo_1080p()
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in configurations}
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        for repeat in range(args.repeats):
            for name, (app_dir, env) in configurations.items():
                cold, first, heatmap = measure(browser, app_dir, env, photo)
                results[name].append((cold, first, heatmap))
                print(
                    f"  run {repeat + 1} {name:26}: cold start {cold:5.2f} s, first inspection {first:5.2f} s, "
                    f"first heatmap {heatmap:5.2f} s"
                )
        browser.close()
    base = [statistics.median(run[i] for run in results["torch runtime (baseline)"]) for i in range(3)]
    print(f"\nmedians of {args.repeats} (ratio = baseline / this: > 1 is faster than the baseline)")
    for name, runs in results.items():
        cold, first, heatmap = (statistics.median(run[i] for run in runs) for i in range(3))
        print(
            f"{name:26}: cold start to a usable Inspect page {cold:5.2f} s ({base[0] / cold:4.2f}x), "
            f"first inspection {first:5.2f} s ({base[1] / first:4.2f}x), "
            f"first heatmap {heatmap:5.2f} s ({base[2] / heatmap:4.2f}x)"
        )
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
