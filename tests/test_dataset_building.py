"""Datasets on real images and a real store: importing labelled folders and zips (and refusing what cannot be
trained on, storing nothing), building from reviewed inspections ("not a part" left out or kept as a reject
class), merging, versioning, and exporting as a folder `train` reads back label for label.

The tests that write and read dataset rows run on both backends (``backend``, or ``BOTH_BACKENDS`` over the
module's reviewed store: PostgreSQL second); the refusals that store nothing run on DuckDB only but one, whose
refused import must leave no row on PostgreSQL either."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from apptest import BOTH_BACKENDS

from visionqc.actions import NOT_A_PART_CLASS
from visionqc.datasets.archive import import_dataset
from visionqc.datasets.building import create_from_reviews, merge_datasets
from visionqc.datasets.checks import DatasetProblem
from visionqc.datasets.export import export_dataset, export_zip, item_of
from visionqc.filters import InspectionFilter
from visionqc.intake.uploads import UploadFile
from visionqc.model.predict import Predictor
from visionqc.store import Store
from visionqc.store.ingest import run_batch
from visionqc.training.datasets import load_dataset


def stored_files(home: Path) -> list[Path]:
    return sorted(p for p in home.rglob("*") if p.is_file() and p.parent.name != "visionqc-data")


def zipped(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
    return buffer.getvalue()


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "home")


@pytest.mark.usefixtures("backend")
def test_importing_class_folders_keeps_every_image_and_warns_about_small_classes(store, tmp_path, labelled_folder):
    folder = labelled_folder(tmp_path / "tiles", 3, ["crack", "free", "uneven"])
    row, warnings = import_dataset(store, "tiles", folder, by="ana")
    assert (row["dataset_id"], row["images"], row["source"], row["created_by"]) == ("tiles@1", 9, "import", "ana")
    assert row["class_counts"] == {"crack": 3, "free": 3, "uneven": 3}
    assert row["no_defect_class"] == "free"
    assert any("fewer than 10" in w and "crack (3)" in w for w in warnings)
    items = store.dataset_items("tiles@1")
    assert sorted(items["file_name"]) == sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg"))
    for item in items.itertuples():
        assert (store.home / item.path).read_bytes() == (folder / item.file_name).read_bytes()
    again, _ = import_dataset(store, "tiles", folder, by="ben")
    assert again["dataset_id"] == "tiles@2"  # a new version; the first is unchanged
    assert store.dataset("tiles")["dataset_id"] == "tiles@2" and store.dataset("tiles@1")["created_by"] == "ana"


@pytest.mark.usefixtures("backend")
def test_a_zip_imports_like_its_folder_and_masks_give_severity_and_location(store, tmp_path, magnetic_tile):
    root = tmp_path / "mt"
    for cls in ("crack", "free"):
        for sub in ("images", "masks"):
            (root / sub / cls).mkdir(parents=True)
        for image in sorted((magnetic_tile / "images" / cls).glob("*.jpg"))[:3]:
            (root / "images" / cls / image.name).write_bytes(image.read_bytes())
            mask = magnetic_tile / "masks" / cls / f"{image.stem}.png"
            (root / "masks" / cls / mask.name).write_bytes(mask.read_bytes())
    archive = tmp_path / "mt.zip"
    archive.write_bytes(zipped(root))
    row, _ = import_dataset(store, "mt", archive, by="ana")
    assert row["class_counts"] == {"crack": 3, "free": 3}
    assert "mt.zip" in row["description"] and "masks" in row["description"]
    items = store.dataset_items(row["dataset_id"]).set_index("defect")
    assert items.loc["crack", "severity"].notna().all() and items.loc["crack", "location"].notna().all()
    assert items.loc["free", "severity"].isna().all()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root, lf: root.mkdir(), "has no class folders"),
        (lambda root, lf: lf(root, 3, ["crack"]), "only one class"),
        (lambda root, lf: lf(root, 3, ["crack", "free"]) and (root / "fray").mkdir(), "without images: fray"),
        (lambda root, lf: lf(root, 3, ["crack", "free"]) and lf(root, 1, ["fray"]), "class fray has only one image"),
    ],
    ids=["empty", "one class", "empty class folder", "one image in a class"],
)
def test_unusable_data_is_refused_with_the_reason_and_nothing_is_stored(
    store, tmp_path, labelled_folder, make, message
):
    root = tmp_path / "data"
    make(root, labelled_folder)
    before = stored_files(store.home)
    with pytest.raises(DatasetProblem, match=message):
        import_dataset(store, "bad", root, by="ana")
    assert store.datasets().empty
    assert stored_files(store.home) == before


@pytest.mark.usefixtures("backend")
def test_unreadable_files_are_listed_and_refused_unless_asked_to_skip(store, tmp_path, labelled_folder):
    root = labelled_folder(tmp_path / "data", 3, ["crack", "free"])
    (root / "crack" / "truncated.jpg").write_bytes(
        (root / "free").joinpath(next((root / "free").iterdir()).name).read_bytes()[:300]
    )
    (root / "free" / "notes.jpg").write_bytes(b"this is a text file with an image extension")
    with pytest.raises(
        DatasetProblem, match=r"2 file\(s\) cannot be read as images: crack/truncated.jpg .*free/notes.jpg"
    ):
        import_dataset(store, "tiles", root, by="ana")
    assert store.datasets().empty
    row, warnings = import_dataset(store, "tiles", root, by="ana", skip_unreadable=True)
    assert row["class_counts"] == {"crack": 3, "free": 3}
    assert warnings[0].startswith("2 unreadable file(s) left out")


def test_an_empty_zip_is_refused(store, tmp_path):
    archive = tmp_path / "empty.zip"
    with zipfile.ZipFile(archive, "w"):
        pass
    with pytest.raises(DatasetProblem, match="empty.zip is empty"):
        import_dataset(store, "nothing", archive, by="ana")
    assert store.datasets().empty


@pytest.mark.usefixtures("backend")
def test_export_writes_what_train_reads_back_label_for_label(store, tmp_path, labelled_folder):
    folder = labelled_folder(tmp_path / "parts", 2, ["crack", "free", "uneven"])
    # A no-defect class that no name gives away: exported datasets say which class it is.
    (folder / "free").rename(folder / "fine-parts")
    row, _ = import_dataset(store, "parts", folder, by="ana")
    assert row["no_defect_class"] == "no_defect"  # the folder alone does not say; the dataset has no fine class
    out = export_dataset(store, "parts", tmp_path / "export")
    dataset = load_dataset(out)
    assert dataset.format == "class-folders"
    assert dataset.class_counts() == {"crack": 2, "fine-parts": 2, "uneven": 2, "no_defect": 0}
    assert dataset.no_defect_class == "no_defect"
    items = store.dataset_items("parts@1")
    for sample in dataset.samples:
        item = items[items["item"] == item_of(dataset.key(sample))].iloc[0]
        assert item.defect == sample.defect and sample.path.read_bytes() == (store.home / item.path).read_bytes()
    with pytest.raises(DatasetProblem, match="not empty"):
        export_dataset(store, "parts", out)
    with zipfile.ZipFile(io.BytesIO(export_zip(store, "parts@1"))) as archive:
        names = archive.namelist()
    assert "parts-v1/dataset.json" in names and "parts-v1/labels.csv" in names and len(names) == 8


@pytest.fixture(scope="module")
def seeded_home(tmp_path_factory, magnetic_tile, default_model_dir) -> Path:
    """Twelve real tile photos inspected by the shipped model: 4 crack, 4 free, 4 uneven."""
    home = tmp_path_factory.mktemp("reviews") / "visionqc-data"
    files = [
        p for cls in ("crack", "free", "uneven") for p in sorted((magnetic_tile / "images" / cls).glob("*.jpg"))[:4]
    ]
    run_batch(
        Store(home),
        Predictor(default_model_dir),
        [UploadFile(f"{p.parent.name}-{p.name}", p.read_bytes()) for p in files],
    )
    return home


@pytest.fixture
def review_store(home) -> Store:
    """A private copy of the reviewed store (``home``: on PostgreSQL too where a test asks ``BOTH_BACKENDS``)."""
    store = Store(home)
    rows, _ = store.search(InspectionFilter(), sort="inspection_id", descending=False, page_size=0)
    by_class = {
        cls: rows[rows["file_name"].str.startswith(cls)]["inspection_id"].tolist()
        for cls in ("crack", "free", "uneven")
    }
    # A person corrects the crack and free photos to their truth, marks two uneven photos "not a part".
    store.review(by_class["crack"], "ana", "correct", defect="crack", severity="low", location="center")
    store.review(by_class["free"], "ana", "correct", defect="free")
    store.mark_unusable(by_class["uneven"][:2], "ana", "not our part")
    store.review(by_class["uneven"][:2], "ana", "confirm")
    return store


@BOTH_BACKENDS
def test_a_dataset_from_reviews_takes_the_effective_labels_of_reviewed_inspections(review_store):
    row, _ = create_from_reviews(review_store, "line-2", InspectionFilter(reviewed=True), by="ana")
    items = review_store.dataset_items(row["dataset_id"])
    assert row["source"] == "reviews" and row["no_defect_class"] == "free"
    assert len(items) == 8  # 4 + 4 corrected; the "not a part" photos left out, unreviewed ones too
    assert (items[items["file_name"].str.startswith("crack")]["defect"] == "crack").all()
    assert set(items[items["file_name"].str.startswith("crack")]["severity"]) == {"low"}
    assert items["inspection_id"].notna().all()
    assert row["recipe"]["filter"] == {"reviewed": True} and row["recipe"]["not_a_part"] == "leave out"


def test_not_a_part_photos_can_become_an_explicit_reject_class(review_store):
    row, _ = create_from_reviews(
        review_store, "line-2", InspectionFilter(reviewed=True), by="ana", not_a_part="reject class"
    )
    items = review_store.dataset_items(row["dataset_id"])
    assert row["class_counts"] == {"crack": 4, "free": 4, NOT_A_PART_CLASS: 2}
    rejected = items[items["defect"] == NOT_A_PART_CLASS]
    assert rejected["file_name"].str.startswith("uneven").all() and rejected["severity"].isna().all()


@BOTH_BACKENDS
def test_reviews_merge_with_a_stored_dataset_and_win_where_both_hold_an_image(review_store, tmp_path, magnetic_tile):
    folder = tmp_path / "original"
    for cls in ("crack", "free"):
        (folder / cls).mkdir(parents=True)
        for image in sorted((magnetic_tile / "images" / cls).glob("*.jpg"))[:4]:
            (folder / cls / image.name).write_bytes(image.read_bytes())
    # The original set calls the first crack photo "free" (a labelling mistake the review fixes).
    first = sorted((folder / "crack").iterdir())[0]
    first.rename(folder / "free" / first.name)
    import_dataset(review_store, "original", folder, by="ana")
    row, _ = create_from_reviews(
        review_store, "merged", InspectionFilter(reviewed=True), by="ana", include=["original"]
    )
    items = review_store.dataset_items(row["dataset_id"])
    assert row["source"] == "merge" and row["recipe"]["include"] == ["original@1"]
    assert len(items) == 8  # the original's 8 photos are the same bytes as the reviewed ones: kept once
    assert items.loc[items["file_name"].str.endswith(first.name), "defect"].tolist() == ["crack"]
    assert items["inspection_id"].notna().all()  # every image's label is now the reviewed one
    merged, _ = merge_datasets(review_store, "both", ["original", row["dataset_id"]], by="ben")
    assert merged["images"] == row["images"]
    # Items read back from the store (no inspection, no severity) merge with reviewed ones and keep their gaps.
    mixed, _ = create_from_reviews(
        review_store, "mixed", InspectionFilter(reviewed=True, defects=("crack",)), by="ana", include=["original"]
    )
    mixed_items = review_store.dataset_items(mixed["dataset_id"])
    from_original = mixed_items[mixed_items["inspection_id"].isna()]
    assert len(from_original) == 4 and set(from_original["defect"]) == {"free"}
    assert from_original["severity"].isna().all()
    with pytest.raises(DatasetProblem, match="at least two"):
        merge_datasets(review_store, "one", ["original"], by="ben")


@BOTH_BACKENDS
def test_filters_that_match_nothing_say_so(review_store):
    with pytest.raises(DatasetProblem, match="no inspections match"):
        create_from_reviews(review_store, "none", InspectionFilter(reviewed=True, batches=("nope",)), by="ana")
    with pytest.raises(DatasetProblem, match="dataset name"):
        create_from_reviews(review_store, "a/b", InspectionFilter(reviewed=True), by="ana")
    assert review_store.datasets().empty
