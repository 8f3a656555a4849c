"""Classification metrics over the 7 emotions (arithmetic by scikit-learn)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from fer_models.labels import EMOTIONS, NUM_CLASSES

_LABELS = list(range(NUM_CLASSES))


def classification_report(*, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, per-class precision/recall/F1/support and the confusion matrix.

    Classes absent from both ``y_true`` and ``y_pred`` get 0 and are left out of the macro mean
    (macro averages run over the classes present in ``y_true``).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    if y_true.size == 0:
        raise ValueError("cannot compute metrics on an empty set")
    present = sorted(set(y_true.tolist()))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=_LABELS, zero_division=0)
    per_class = {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, name in enumerate(EMOTIONS)
    }
    return {
        "accuracy": float((y_true == y_pred).mean()),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=_LABELS, average="weighted", zero_division=0)),
        "macro_precision": float(np.mean([p[i] for i in present])),
        "macro_recall": float(np.mean([r[i] for i in present])),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=_LABELS).tolist(),
        "n": int(y_true.size),
    }
