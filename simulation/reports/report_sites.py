"""The report's per-site (per-group) section: accuracy, gap, face-crop counts and each site's confusion matrix.

Groups are the datasets of a combined run (``partition=group``, leave-one-out) or the sites of a
``client-data=site`` run (federated evaluation: each site's held-out split)."""

from __future__ import annotations

from typing import Any

from fer_models.common.labels import EMOTIONS

_SHORT = [e[:3] for e in EMOTIONS]


def _confusion_table(matrix: list[list[int]]) -> list[str]:
    out = ["| true \\ predicted | " + " | ".join(_SHORT) + " |", "|---|" + "---|" * len(_SHORT)]
    out += [f"| {EMOTIONS[i]} | " + " | ".join(str(v) for v in row) + " |" for i, row in enumerate(matrix)]
    return out


def sites_markdown(summary: dict[str, Any] | None) -> list[str]:
    """Markdown lines of the per-group section, or none when the run has no groups."""
    groups = (summary or {}).get("groups")
    if not groups:
        return []
    dataset = (summary or {}).get("dataset", {})
    federated = dataset.get("evaluation") == "federated"
    what = ("each site's own held-out split, evaluated on the site (federated evaluation: the server holds no "
            "site's data)" if federated else "the reported split, by group")
    accs = {g: v["accuracy"] for g, v in groups.items() if v.get("n")}
    worst = min(accs, key=accs.get) if accs else "?"
    out = ["", "## Per site", "", f"Accuracy of the final model on {what}; gap = best - worst = "
           f"**{summary.get('group_gap', 0.0):.4f}**, worst site **{worst}**.", "",
           "| site | accuracy | n | faces found | face fallbacks |", "|---|---|---|---|---|"]
    out += [f"| {g} | {v['accuracy']:.4f} | {v['n']} | " + (
        f"{v['faces_found']} | {v['face_fallbacks']} |" if v.get("faces_found") or v.get("face_fallbacks")
        else "not searched | - |") for g, v in groups.items()]
    for g, v in groups.items():
        if v.get("confusion_matrix"):
            out += ["", f"Confusion matrix of {g} (rows: true class):", ""] + _confusion_table(v["confusion_matrix"])
    return out
