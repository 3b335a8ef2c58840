"""The dataset, model, train --dataset/--register, jobs and reinspect commands as a user runs them (``cli.main``
in-process over a real data folder): the loop from a labelled folder to a promoted, rolled-back model, and every
bad input answered with a clear message that changes nothing."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from visionqc import cli, config
from visionqc.registry import ModelRegistry
from visionqc.store import Store

SMALL = [
    "--views",
    "1",
    "--epochs",
    "3",
    "--no-phase2",
    "--conv-head",
    "off",
    "--repeats",
    "0",
    "--quiet",
    "--by",
    "ana",
]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "visionqc-data"
    monkeypatch.setenv("VISIONQC_HOME", str(home))
    monkeypatch.delenv("VISIONQC_MODEL", raising=False)
    return home


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_from_a_labelled_folder_to_a_promoted_model_and_back(home, tmp_path, labelled_folder, magnetic_tile, capsys):
    folder = labelled_folder(tmp_path / "tiles", 4)
    code, out, err = run(capsys, "dataset", "import", "tiles", str(folder), "--by", "ana", "--quiet")
    assert code == 0, err
    assert "dataset tiles@1: 24 images (blowhole 4, break 4, crack 4, fray 4, free 4, uneven 4)" in out
    assert "too few images to learn well" in err
    code, out, _ = run(capsys, "dataset", "list")
    assert "tiles@1" in out and "24 images" in out and "warning: too few images" in out
    code, out, err = run(capsys, "dataset", "export", "tiles", "--out", str(tmp_path / "export"))
    assert code == 0 and sorted(p.name for p in (tmp_path / "export").iterdir())[:2] == ["blowhole", "break"]
    assert run(capsys, "dataset", "export", "tiles", "--out", str(tmp_path / "tiles.zip"))[0] == 0
    assert (tmp_path / "tiles.zip").stat().st_size > 0

    # The Models page's training job, from the terminal: queued, followed, registered.
    code, out, err = run(capsys, "train", "--dataset", "tiles", "--name", "tiles-model", *SMALL)
    assert code == 0, err
    assert "registered tiles-model v1" in out and "model compare magnetic-tile/2 tiles-model/1" in out
    # The same work as a plain `train` of the exported folder, put in the registry with --register.
    code, out, err = run(
        capsys,
        "train",
        str(tmp_path / "export"),
        "--out",
        str(tmp_path / "m2"),
        "--name",
        "tiles-model",
        "--register",
        *SMALL,
    )
    assert code == 0, err
    assert "registered as tiles-model v2" in out

    code, out, _ = run(capsys, "model", "list")
    assert out.splitlines()[-1].startswith("* magnetic-tile/2")  # still the active one: training never switches
    code, out, _ = run(capsys, "model", "activate", "tiles-model/1", "--by", "ana")
    assert code == 0 and "tiles-model v1 is now the active model" in out
    assert config.model_dir() == home / "models" / "tiles-model" / "1"
    photo = sorted((magnetic_tile / "images" / "crack").glob("*.jpg"))[0]
    assert run(capsys, "inspect", str(photo), "--quiet")[0] == 0
    [batch] = Store(home).list_batches().itertuples()
    assert (batch.model_name, batch.model_version) == ("tiles-model", "1")  # the CLI uses the active model

    code, out, _ = run(capsys, "reinspect", "--batch", batch.batch_id, "--model", "magnetic-tile", "--by", "ana")
    assert code == 0 and "1 re-inspected with magnetic-tile v2" in out
    code, out, _ = run(capsys, "model", "rollback", "--by", "ben")
    assert code == 0 and "magnetic-tile v2 is the active model again" in out
    code, out, _ = run(capsys, "model", "history")
    assert [line.split()[1] for line in out.splitlines()] == ["rollback", "promote", "first"]
    code, out, _ = run(capsys, "jobs")
    assert "succeeded" in out and "tiles-model/1" in out


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root, lf: root.mkdir(), "has no class folders"),
        (lambda root, lf: lf(root, 3, ["crack"]), "only one class"),
        (lambda root, lf: lf(root, 3, ["crack", "free"]) and lf(root, 1, ["fray"]), "class fray has only one image"),
        (
            lambda root, lf: (
                lf(root, 3, ["crack", "free"]) and (root / "crack" / "bad.jpg").write_bytes(b"\xff\xd8\xff")
            ),
            r"1 file\(s\) cannot be read as images: crack/bad.jpg",
        ),
    ],
    ids=["empty archive", "one class", "a class with one image", "corrupt file"],
)
def test_bad_datasets_get_a_clear_message_and_change_nothing(home, tmp_path, labelled_folder, capsys, make, message):
    root = tmp_path / "data"
    make(root, labelled_folder)
    code, _, err = run(capsys, "dataset", "import", "bad", str(root), "--quiet")
    assert code == 1 and err.startswith("error: ")
    assert re.search(message, err), err
    assert Store(home).datasets().empty


def test_a_non_model_directory_is_refused_and_changes_nothing(home, tmp_path, default_model_dir, capsys):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    code, _, err = run(capsys, "model", "register", str(folder))
    assert code == 1 and "is not a usable model" in err and "has no model.json" in err
    shutil.copytree(default_model_dir, tmp_path / "copy")
    code, _, err = run(capsys, "model", "register", str(tmp_path / "copy"))
    assert code == 1 and "magnetic-tile version 2 is already registered" in err
    assert [v.label for v in ModelRegistry(home).versions()] == ["magnetic-tile v2"]
    code, _, err = run(capsys, "model", "activate", "door-panel", "--by", "ana")
    assert code == 1 and "there is no registered model 'door-panel'" in err
    code, _, err = run(capsys, "model", "rollback", "--by", "ana")
    assert code == 1 and "no earlier active version" in err
    assert len(ModelRegistry(home).activations()) == 1


def test_create_from_reviews_and_train_on_a_missing_dataset_explain_themselves(home, capsys):
    code, _, err = run(capsys, "dataset", "create", "line-2", "--from-reviews")
    assert code == 1 and "no inspections match" in err
    code, _, err = run(capsys, "dataset", "create", "line-2")
    assert code == 1 and "--from-reviews" in err
    code, _, err = run(capsys, "train", "--dataset", "nope", "--name", "x")
    assert code == 1 and "there is no dataset 'nope'" in err
    code, _, err = run(capsys, "train", "--name", "x")
    assert code == 1 and "give DATA and --out DIR, or --dataset NAME" in err
