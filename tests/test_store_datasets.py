"""The dataset rows of the store on both backends: versions, items, and the list the Models page and
``python -m visionqc datasets list`` show (with each dataset's images per class)."""

from __future__ import annotations

import pandas as pd
import pytest

from visionqc.store import Store

pytestmark = pytest.mark.usefixtures("backend")  # on DuckDB and on PostgreSQL


def items(labels: list[str]) -> pd.DataFrame:
    """Dataset items (the images need not exist for the rows: the store keeps paths, not pixels)."""
    return pd.DataFrame(
        {
            "sha256": [f"{i:064x}" for i in range(len(labels))],
            "path": [f"images/{i:02x}/{i:064x}.jpg" for i in range(len(labels))],
            "file_name": [f"{label}/{i}.jpg" for i, label in enumerate(labels)],
            "defect": labels,
            "origin": "import",
        }
    )


def test_the_dataset_list_counts_images_per_class_for_every_version(tmp_path):
    """Was DuckDB-only SQL (``map_from_entries(list(...))``, ``GROUP BY ALL``): on PostgreSQL the list, and with
    it the Models page, failed with a syntax error once a dataset existed."""
    store = Store(tmp_path / "home")
    assert store.datasets().empty
    common = {"source": "import", "no_defect_class": "free"}
    store.create_dataset("tiles", items(["crack", "free", "free"]), created_by="ana", recipe={"from": "a"}, **common)
    store.create_dataset("tiles", items(["crack", "crack", "free", "uneven"]), created_by="ben", **common)
    store.create_dataset("panels", items(["free", "scratch"]), created_by="ana", **common)

    rows = store.datasets()
    assert list(rows["dataset_id"]) == ["panels@1", "tiles@2", "tiles@1"]  # newest first
    counts = dict(zip(rows["dataset_id"], rows["class_counts"], strict=True))
    assert counts == {
        "panels@1": {"free": 1, "scratch": 1},
        "tiles@2": {"crack": 2, "free": 1, "uneven": 1},
        "tiles@1": {"crack": 1, "free": 2},
    }
    assert list(rows["images"]) == [2, 4, 3]
    assert rows.set_index("dataset_id").loc["tiles@1", "recipe"] == {"from": "a"}
    assert store.dataset("tiles")["class_counts"] == counts["tiles@2"]
