"""The audit's figures (ROC curves, canary scores) and its section of report.md (from ``audit.json``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from fer_models.audit.membership import RocResult
from simulation.reports.figures import save_png as _save

AUDIT_FILE = "audit.json"
ROC_FIGURE = "audit_roc.png"
CANARY_FIGURE = "audit_canaries.png"


def plot_roc(*, curves: Mapping[str, RocResult], path: Path) -> Path:
    """Each attack's ROC, linear and log-log (the low-FPR corner is where membership leaks matter)."""
    return _save(roc_figure(curves=curves), path)


def roc_figure(*, curves: Mapping[str, RocResult]) -> Figure:
    """:func:`plot_roc`'s figure: rates on 0-1 axes (linear), from 1/non-members to 1 (log-log)."""
    fig = Figure(figsize=(10, 4.4))
    first = next(iter(curves.values()))
    lo = 1.0 / max(c.non_members for c in curves.values())
    for ax, log in zip(fig.subplots(1, 2), (False, True)):
        for name, c in curves.items():
            ax.plot(c.fpr, c.tpr, label=f"{name} attack (AUC {c.auc:.3f})")
        ax.plot([lo, 1], [lo, 1], color="grey", linestyle="--", label="chance")
        if log:
            ax.set(xscale="log", yscale="log", xlim=(lo, 1), ylim=(lo, 1))
            for axis in (ax.xaxis, ax.yaxis):  # plain tick labels: no mathtext (and no font search)
                axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        else:
            ax.set(xlim=(0, 1), ylim=(0, 1))
        ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title="log-log" if log else "linear")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"membership inference: {first.members} members vs {first.non_members} non-members")
    return fig


def plot_canary_scores(*, scores: np.ndarray, included: np.ndarray, path: Path) -> Path:
    """Histogram of the canaries' scores, included against left out."""
    return _save(canary_figure(scores=scores, included=included), path)


def canary_figure(*, scores: np.ndarray, included: np.ndarray) -> Figure:
    """:func:`plot_canary_scores`'s figure."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    bins = np.linspace(float(np.min(scores)), float(np.max(scores)) + 1e-9, 40)
    for mask, label in ((included, "included"), (~included, "left out")):
        ax.hist(scores[mask], bins=bins, alpha=0.6, label=f"{label} (n={int(mask.sum())})")
    ax.set(xlabel="log p - log(1 - p) of the canary label", ylabel="canaries", title="canary scores")
    ax.legend(fontsize=8)
    return fig


def _num(value: object, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "none claimed"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def audit_section(*, run_dir: Path) -> str:
    """The "Privacy audit" section of report.md, or "" when the run has not been audited."""
    path = Path(run_dir) / AUDIT_FILE
    if not path.is_file():
        return ""
    audit = json.loads(path.read_text(encoding="utf-8"))
    mem = audit["membership"]
    first = next(iter(mem["attacks"].values()))
    out = ["", "## Privacy audit (`fedfer audit`)", "",
           f"Membership inference on the global model (round {audit.get('model_round')}): "
           f"{first['members']} members ({mem['members_from']}) against {first['non_members']} non-members "
           f"({mem['non_members_from']}); chance is AUC 0.5 and TPR = FPR. `loss-calibrated` is the loss attack "
           f"relative to the loss of held-out faces of the same class ({mem.get('calibration_reference', '?')}).", "",
           "| attack | AUC | advantage | TPR at 1% FPR | TPR at 0.1% FPR |", "|---|---|---|---|---|"]
    out += [f"| {name} | {a['auc']:.3f} | {a['advantage']:.3f} | {a['tpr_at_fpr_0.01']:.4f} | "
            f"{a['tpr_at_fpr_0.001']:.4f} |" for name, a in mem["attacks"].items()]
    coarse = [f"{rate:g}" for rate in (0.01, 0.001) if first["fpr_resolution"] > rate]
    if coarse:
        out += ["", f"With {first['non_members']} non-members the smallest non-zero FPR is "
                    f"{first['fpr_resolution']:.4f}: TPR at FPR {' and '.join(coarse)} is read at FPR 0 (a lower bound)."]
    out += ["", f"![membership inference ROC]({ROC_FIGURE})", ""]
    can = audit.get("canaries")
    if not can:
        out += ["No canaries were planted (`audit-canaries = 0`), so no empirical epsilon lower bound.", ""]
        return "\n".join(out) + "\n"
    out += [f"Canary audit (Steinke, Nasr & Jagielski 2023, one training run): {can['count']} {can['kind']}, "
            f"{can['included']} included (plan: `{can['plan']}`). Guessing \"in\" for the {can['guesses_in']} "
            f"highest and \"out\" for the {can['guesses_out']} lowest scores got {can['correct']} of "
            f"{can['guesses_in'] + can['guesses_out']} right.", "",
            "| | epsilon | what it is |", "|---|---|---|",
            f"| empirical lower bound | **{_num(can['epsilon_lower_bound'])}** | {can['confidence']:.0%} confidence, "
            f"{can['bound_label']} |",
            f"| accountant (reported) | **{_num(can['accountant_epsilon'])}** | {can['accountant_label']} |",
            f"| most this audit could show | {_num(can['attainable_bound'])} | every guess right |", ""]
    verdict = ("no epsilon was claimed (the bound measures what the model leaks)" if can["consistent"] is None
               else "consistent: the measured lower bound does not exceed the reported epsilon" if can["consistent"]
               else "VIOLATION: the measured lower bound exceeds the reported epsilon")
    out += [f"Verdict: {verdict}.", "", f"![canary scores]({CANARY_FIGURE})", ""]
    return "\n".join(out) + "\n"
