"""Metrics against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from visionqc.training.metrics import balanced_accuracy, classification_report, confusion_matrix

# Worked example: 6 samples, 3 classes.
#   true: a a a b b c      confusion (rows true, columns predicted):  a [2 1 0]
#   pred: a a b b c c                                                 b [0 1 1]
#                                                                     c [0 0 1]
Y_TRUE = [0, 0, 0, 1, 1, 2]
Y_PRED = [0, 0, 1, 1, 2, 2]


def test_confusion_matrix_rows_are_true_columns_are_predicted():
    assert confusion_matrix(Y_TRUE, Y_PRED, 3).tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_report_matches_hand_computation():
    rep = classification_report(Y_TRUE, Y_PRED, ["a", "b", "c"])
    assert rep.accuracy == pytest.approx(4 / 6)
    # recall a=2/3, b=1/2, c=1 -> mean 13/18
    assert rep.recall == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert rep.balanced_accuracy == pytest.approx(13 / 18)
    # precision a=2/2, b=1/2, c=1/2
    assert rep.precision == pytest.approx([1.0, 0.5, 0.5])
    # F1 a = 2*1*(2/3)/(1+2/3) = 0.8, b = 0.5, c = 2*0.5*1/1.5 = 2/3
    assert rep.f1 == pytest.approx([0.8, 0.5, 2 / 3])
    assert rep.macro_f1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert rep.support == [3, 2, 1]
    assert balanced_accuracy(Y_TRUE, Y_PRED, 3) == pytest.approx(13 / 18)


def test_absent_classes_follow_the_documented_conventions():
    # class "d" never occurs and is never predicted: left out of balanced accuracy and macro F1.
    rep = classification_report(Y_TRUE, Y_PRED, ["a", "b", "c", "d"])
    assert rep.balanced_accuracy == pytest.approx(13 / 18)
    assert rep.macro_f1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert rep.precision[3] == 0.0 and rep.recall[3] == 0.0
    # class "b" predicted once but never true: its F1 (0) counts in macro F1, not in balanced accuracy.
    rep = classification_report([0, 0, 2], [0, 1, 2], ["a", "b", "c"])
    assert rep.balanced_accuracy == pytest.approx((1 / 2 + 1) / 2)
    f1_a = 2 * 1 * 0.5 / 1.5
    assert rep.macro_f1 == pytest.approx((f1_a + 0.0 + 1.0) / 3)


def test_perfect_and_empty_inputs():
    rep = classification_report([1, 0, 1], [1, 0, 1], ["x", "y"])
    assert (rep.accuracy, rep.balanced_accuracy, rep.macro_f1) == (1.0, 1.0, 1.0)
    empty = classification_report(np.array([], dtype=int), np.array([], dtype=int), ["x", "y"])
    assert empty.accuracy == 0.0 and empty.count == 0


def test_json_and_text_forms_carry_labels_and_matrix():
    rep = classification_report(Y_TRUE, Y_PRED, ["a", "b", "c"])
    data = rep.to_json()
    assert data["confusion_matrix"]["labels"] == ["a", "b", "c"]
    assert data["confusion_matrix"]["rows_true_columns_predicted"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert data["per_class"]["b"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert "balanced accuracy=0.7222" in rep.format()


def test_mismatched_lengths_are_a_bug():
    with pytest.raises(ValueError, match="differ in length"):
        confusion_matrix([0, 1], [0], 2)
