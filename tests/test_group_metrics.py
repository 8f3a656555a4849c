"""Per-group (per-dataset / culture) accuracy and the largest gap, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from server.evaluation import group_accuracy


def test_group_accuracy_and_gap_match_hand_counts():
    groups = np.array(["fer", "fer", "fer", "fer", "jaffe", "jaffe"])
    y_true = np.array([0, 1, 2, 3, 4, 5])
    y_pred = np.array([0, 1, 2, 0, 4, 0])
    out = group_accuracy(groups=groups, y_true=y_true, y_pred=y_pred)
    assert out["groups"]["fer"] == {"accuracy": 0.75, "n": 4}
    assert out["groups"]["jaffe"] == {"accuracy": 0.5, "n": 2}
    assert out["group_gap"] == pytest.approx(0.25)
