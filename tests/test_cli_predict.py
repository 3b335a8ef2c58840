"""`python -m visionqc predict` on real images, as a user runs it: a subprocess, JSON Lines out."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile

from visionqc import config


def run_cli(*args: str, model=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "visionqc", *args]
    if model is not None:
        cmd += ["--model", str(model)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=config.PROJECT_ROOT, timeout=300)


def test_predict_json_on_files_folder_and_zip(tmp_path, magnetic_tile, default_model_dir):
    crack = sorted((magnetic_tile / "images" / "crack").glob("*.jpg"))[:2]
    folder = tmp_path / "folder"
    folder.mkdir()
    free = sorted((magnetic_tile / "images" / "free").glob("*.jpg"))[:2]
    for p in free:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    archive = tmp_path / "batch.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(crack[1], "inner/" + crack[1].name)
        zf.writestr("../escape.jpg", b"x")

    result = run_cli("predict", str(crack[0]), str(folder), str(archive), "--json", model=default_model_dir)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    ok = [r for r in records if "error" not in r]
    errors = {r["file"].rsplit("/", 1)[-1]: r["error"] for r in records if "error" in r}
    assert len(ok) == 4
    assert set(errors) == {"broken.jpg", "escape.jpg"}
    assert "leaves the archive" in errors["escape.jpg"]
    card = json.loads((default_model_dir / "model.json").read_text())
    for record in ok:
        for field in ("defect", "severity", "location", "is_defect", "needs_review", "review_reason", "action"):
            assert field in record, field
        assert record["defect"]["label"] in record["defect"]["probabilities"]
        assert len(record["embedding"]) == 1280
        assert record["model"] == {"name": card["name"], "version": card["version"]}
        assert record["action"] in ("Pass", "Hold", "Rework", "Reject", "Review")
        if not record["is_defect"]:
            assert record["severity"]["label"] is None and record["location"]["label"] is None
    assert "could not read" in result.stderr and "4 image(s) classified, 2 failed" in result.stderr


def test_predict_exit_code_when_nothing_is_readable(tmp_path, default_model_dir):
    (tmp_path / "a.png").write_text("just text")
    result = run_cli("predict", str(tmp_path / "a.png"), str(tmp_path / "missing.jpg"), model=default_model_dir)
    assert result.returncode == 2
    assert "not an image" in result.stderr and "no such file" in result.stderr


def test_predict_refuses_a_bad_model_directory(tmp_path):
    (tmp_path / "model.json").write_text("{}")
    img = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(img, format="PNG")
    (tmp_path / "x.png").write_bytes(img.getvalue())
    result = run_cli("predict", str(tmp_path / "x.png"), model=tmp_path)
    assert result.returncode == 3
    assert "cannot load model" in result.stderr and "'format' must be" in result.stderr


def test_help_explains_each_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("predict", "inspect", "train", "evaluate"):
        assert command in result.stdout
    predict_help = run_cli("predict", "--help").stdout
    assert "--json" in predict_help and "zip" in predict_help
