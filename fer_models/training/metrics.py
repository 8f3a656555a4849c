"""Classification metrics over the 7 emotions (arithmetic by scikit-learn)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from fer_models.common.labels import EMOTIONS, NUM_CLASSES

_LABELS = list(range(NUM_CLASSES))
#: A model that gives one class to more than this share of the images it is scored on has collapsed onto that
#: class (e.g. the majority class under heavy DP noise): its accuracy is about that class's share, not skill.
ONE_CLASS_SHARE = 0.9


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


def classification_report_from_confusion(matrix: np.ndarray) -> dict[str, Any]:
    """:func:`classification_report` of the labels a confusion matrix counts (rows true, columns predicted):
    the same numbers as on the samples themselves, e.g. for counts summed over sites."""
    counts = np.asarray(matrix, dtype=np.int64).reshape(NUM_CLASSES, NUM_CLASSES)
    if (counts < 0).any():
        raise ValueError("a confusion matrix holds counts: negative entries are not counts")
    cells = np.arange(NUM_CLASSES * NUM_CLASSES)
    pairs = np.repeat(cells, counts.ravel())
    return classification_report(y_true=pairs // NUM_CLASSES, y_pred=pairs % NUM_CLASSES)


def group_report(confusions: dict[str, np.ndarray]) -> dict[str, Any]:
    """Accuracy, n and confusion matrix per group (dataset, culture, site) and the largest gap between two."""
    per: dict[str, Any] = {}
    for name, matrix in confusions.items():
        counts = np.asarray(matrix, dtype=np.int64).reshape(NUM_CLASSES, NUM_CLASSES)
        n = int(counts.sum())
        per[str(name)] = {"accuracy": float(np.trace(counts) / n) if n else float("nan"), "n": n,
                          "confusion_matrix": counts.tolist()}
    accs = [v["accuracy"] for v in per.values() if v["n"]]
    return {"groups": per, "group_gap": float(max(accs) - min(accs)) if accs else 0.0}


def group_accuracy(*, groups: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """:func:`group_report` of samples tagged with their group."""
    return group_report({str(g): confusion_matrix(y_true[groups == g], y_pred[groups == g], labels=_LABELS)
                         for g in np.unique(groups)})


def one_class_prediction(matrix: Any) -> dict[str, Any] | None:
    """``{"class", "share", "threshold"}`` when one predicted class (a column of the confusion matrix, rows true)
    takes more than :data:`ONE_CLASS_SHARE` of the images; else None (also for an empty matrix)."""
    predicted = np.asarray(matrix, dtype=np.int64).reshape(NUM_CLASSES, NUM_CLASSES).sum(axis=0)
    n = int(predicted.sum())
    if n == 0:
        return None
    top = int(predicted.argmax())
    share = float(predicted[top] / n)
    return {"class": EMOTIONS[top], "share": share, "threshold": ONE_CLASS_SHARE} if share > ONE_CLASS_SHARE else None


def one_class_warning(final: dict[str, Any]) -> str:
    """The sentence console, log and report.md give for a final report holding ``one_class``."""
    flag = final["one_class"]
    return (f"the final model predicts {flag['class']} for {flag['share']:.0%} of the {final.get('n', '?')} "
            f"{final.get('split', '?')} images (over {flag['threshold']:.0%}): it has collapsed onto one class, so "
            f"its accuracy is about that class's share, not skill; train longer, lower the DP noise (a larger "
            f"epsilon) or use class-balance=weighted-loss")
