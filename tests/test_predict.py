"""The predictor with the shipped model on real images, and the action policy."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from visionqc.actions import ActionPolicy
from visionqc.intake.imaging import ImageDecodeError
from visionqc.model.predict import Predictor


@pytest.fixture(scope="module")
def predictor(default_model_dir):
    return Predictor(default_model_dir)


def test_default_policy():
    policy = ActionPolicy()
    assert policy.decide("free", None, needs_review=False, is_defect=False) == "Pass"
    assert policy.decide("crack", "high", needs_review=False, is_defect=True) == "Reject"
    assert policy.decide("crack", "medium", needs_review=False, is_defect=True) == "Rework"
    assert policy.decide("crack", "low", needs_review=False, is_defect=True) == "Hold"
    assert policy.decide("crack", "low", needs_review=True, is_defect=True) == "Review"
    assert policy.decide("free", None, needs_review=True, is_defect=False) == "Review"


def test_policy_file_overrides(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"by_severity": {"low": "Pass"}, "overrides": {"crack": "Reject", "break/low": "Hold"}}))
    policy = ActionPolicy.from_file(path)
    assert policy.decide("uneven", "low", False, True) == "Pass"
    assert policy.decide("uneven", "high", False, True) == "Reject"
    assert policy.decide("crack", "low", False, True) == "Reject"
    assert policy.decide("break", "low", False, True) == "Hold"


def test_policy_rejects_unknown_actions(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"overrides": {"crack": "Scrap"}}))
    with pytest.raises(ValueError, match="unknown action 'Scrap'"):
        ActionPolicy.from_file(path)
    path.write_text(json.dumps({"severity": {}}))
    with pytest.raises(ValueError, match="unknown keys"):
        ActionPolicy.from_file(path)


def test_predictions_on_real_images(predictor, magnetic_tile):
    card = predictor.card
    paths = [next((magnetic_tile / "images" / cls).glob("*.jpg")) for cls in ("free", "blowhole", "crack")]
    results = list(predictor.predict_stream((p.name, p.read_bytes()) for p in paths))
    assert [key for key, _, _ in results] == [p.name for p in paths]
    for _, decoded, pred in results:
        assert decoded is not None
        assert next(iter(pred.tasks)) == "defect" and set(pred.tasks) == set(card.task_names)
        defect = pred.defect
        assert defect.label in card.classes("defect")
        assert abs(sum(defect.probabilities.values()) - 1) < 1e-4
        assert defect.confidence == max(defect.probabilities.values())
        assert pred.embedding.shape == (1280,) and pred.embedding.dtype == np.float32
        assert pred.action in ("Pass", "Hold", "Rework", "Reject", "Review")
        assert pred.needs_review == (pred.review_reason is not None)
        if not pred.is_defect:
            assert all(r.label is None and r.probabilities == {} for t, r in pred.tasks.items() if t != "defect")
            assert pred.action in ("Pass", "Review")
        else:
            assert pred.tasks["severity"].label in card.classes("severity")


def test_stream_reports_bad_files_and_keeps_going(predictor, magnetic_tile):
    good = next((magnetic_tile / "images" / "free").glob("*.jpg")).read_bytes()
    items = [("a.jpg", good), ("empty.jpg", b""), ("text.png", b"not an image at all"), ("b.jpg", good)]
    results = {key: result for key, _, result in predictor.predict_stream(items)}
    assert isinstance(results["empty.jpg"], ImageDecodeError)
    assert isinstance(results["text.png"], ImageDecodeError)
    assert results["a.jpg"].defect.label == results["b.jpg"].defect.label
    np.testing.assert_allclose(results["a.jpg"].embedding, results["b.jpg"].embedding, rtol=1e-5, atol=1e-5)


def test_batched_and_single_predictions_agree(predictor, magnetic_tile):
    paths = sorted((magnetic_tile / "images" / "uneven").glob("*.jpg"))[:10]
    images = [Image.open(io.BytesIO(p.read_bytes())).convert("RGB") for p in paths]
    batched = predictor.predict_images(images)
    single = [predictor.predict_images([im])[0] for im in images[:3]]
    for b, s in zip(batched, single, strict=False):
        assert b.defect.label == s.defect.label
        assert abs(b.defect.confidence - s.defect.confidence) < 1e-4


def test_out_of_distribution_image_is_flagged(predictor):
    if predictor.card.ood_threshold is None:
        pytest.skip("the shipped model has no OOD threshold")
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8), "RGB")
    pred = predictor.predict_images([noise])[0]
    assert pred.needs_review and "unlike the photos it learned from" in pred.review_reason
    assert pred.action == "Review"


def test_a_no_defect_prediction_above_the_miss_averse_cut_asks_for_a_second_look(predictor, magnetic_tile):
    image = Image.open(sorted((magnetic_tile / "images" / "free").glob("*.jpg"))[0]).convert("RGB")
    card = predictor.card
    original = card.miss_threshold
    try:
        card.miss_threshold = None
        (plain,) = predictor.predict_images([image])
        assert plain.defect.label == card.no_defect_class
        defect_probability = 1 - plain.defect.probabilities[card.no_defect_class]
        card.miss_threshold = defect_probability / 2  # any defect probability above it must be looked at
        (flagged,) = predictor.predict_images([image])
        assert flagged.needs_review and "may hide a defect" in flagged.review_reason
        assert flagged.action == "Review" and flagged.defect.label == card.no_defect_class
        card.miss_threshold = min(1.0, defect_probability + 0.01)
        (passed,) = predictor.predict_images([image])
        assert "may hide a defect" not in (passed.review_reason or "")
    finally:
        card.miss_threshold = original


def test_batches_run_in_parallel_give_the_same_stream_in_the_same_order(default_model_dir, magnetic_tile):
    """Two batches in flight at once (each decoded and run by its own thread) change the speed, nothing else: the
    same keys in the same order, the bad files where they were, the same predictions."""
    photos = (
        sorted((magnetic_tile / "images" / "crack").glob("*.jpg"))[:5]
        + sorted((magnetic_tile / "images" / "free").glob("*.jpg"))[:6]
    )
    items = [(p.name, p.read_bytes()) for p in photos]
    items[3:3] = [("empty.jpg", b"")]
    items[8:8] = [("text.png", b"not an image at all")]
    one_at_a_time = Predictor(default_model_dir, parallel_batches=1, batch_size=8)
    parallel = Predictor(default_model_dir, parallel_batches=2, batch_size=2)
    assert parallel.runtime == one_at_a_time.runtime == "onnx"
    one, two = list(one_at_a_time.predict_stream(items)), list(parallel.predict_stream(iter(items)))
    assert [key for key, _, _ in two] == [key for key, _, _ in one] == [key for key, _ in items]
    for (key, decoded, a), (_, _, b) in zip(one, two, strict=True):
        if key in ("empty.jpg", "text.png"):
            assert decoded is None and type(a) is type(b) is ImageDecodeError and str(a) == str(b)
            continue
        assert (a.defect.label, a.action, a.needs_review) == (b.defect.label, b.action, b.needs_review)
        assert a.defect.confidence == pytest.approx(b.defect.confidence, abs=1e-5)
        np.testing.assert_allclose(a.embedding, b.embedding, rtol=1e-5, atol=1e-5)
