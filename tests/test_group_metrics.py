"""Per-group (per-dataset / culture) accuracy and the largest gap, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from fer_models.training.metrics import group_accuracy


def test_group_accuracy_and_gap_match_hand_counts():
    groups = np.array(["fer", "fer", "fer", "fer", "jaffe", "jaffe"])
    y_true = np.array([0, 1, 2, 3, 4, 5])
    y_pred = np.array([0, 1, 2, 0, 4, 0])
    out = group_accuracy(groups=groups, y_true=y_true, y_pred=y_pred)
    assert {k: out["groups"]["fer"][k] for k in ("accuracy", "n")} == {"accuracy": 0.75, "n": 4}
    assert {k: out["groups"]["jaffe"][k] for k in ("accuracy", "n")} == {"accuracy": 0.5, "n": 2}
    assert out["group_gap"] == pytest.approx(0.25)
    jaffe = np.zeros((7, 7), int)
    jaffe[4, 4] = jaffe[5, 0] = 1  # surprise predicted as angry
    assert out["groups"]["jaffe"]["confusion_matrix"] == jaffe.tolist()
