"""Metrics against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from fer_models.training.metrics import classification_report


def test_small_confusion_case_matches_hand_computed_values():
    # classes: 0 angry, 3 happy, 6 neutral
    y_true = np.array([0, 0, 0, 3, 3, 6])
    y_pred = np.array([0, 0, 3, 3, 6, 6])
    rep = classification_report(y_true=y_true, y_pred=y_pred)
    assert rep["accuracy"] == pytest.approx(4 / 6)
    # angry: tp=2 fp=0 fn=1 -> P=1, R=2/3, F1=0.8
    assert rep["per_class"]["angry"]["precision"] == pytest.approx(1.0)
    assert rep["per_class"]["angry"]["recall"] == pytest.approx(2 / 3)
    assert rep["per_class"]["angry"]["f1"] == pytest.approx(0.8)
    # happy: tp=1 fp=1 fn=1 -> P=R=F1=0.5 ; neutral: tp=1 fp=1 fn=0 -> P=0.5 R=1 F1=2/3
    assert rep["per_class"]["happy"]["f1"] == pytest.approx(0.5)
    assert rep["per_class"]["neutral"]["f1"] == pytest.approx(2 / 3)
    # macro over the 3 classes present in y_true
    assert rep["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # weighted by support 3, 2, 1
    assert rep["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    cm = np.array(rep["confusion_matrix"])
    assert cm.shape == (7, 7) and cm[0, 0] == 2 and cm[0, 3] == 1 and cm[3, 6] == 1 and cm.sum() == 6


def test_empty_input_is_refused():
    with pytest.raises(ValueError, match="empty"):
        classification_report(y_true=np.array([]), y_pred=np.array([]))
