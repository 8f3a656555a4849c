"""The run folder's figures: each built as a matplotlib :class:`Figure` (no pyplot state), then written as PNG.

Conventions every figure keeps (tests/test_figures.py reads them off the Figure objects):
- a title on every figure;
- accuracy and other 0-1 scores on a fixed 0-1 axis (never auto-zoomed onto a 0.186-0.200 band);
- rounds on whole-number ticks (no 0.5 rounds on a 3-round run);
- count heat maps on a colour scale from 0, each cell annotated with its count, so that an IID split
  (nearly equal counts) looks uniform instead of exaggerated into dark and bright cells.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fer_models.common.atomic import atomic_write_bytes
from fer_models.common.labels import EMOTIONS, NUM_CLASSES

DPI = 100
#: The fixed range of every accuracy (and precision/recall/F1) axis.
SCORE_LIMITS = (0.0, 1.0)


def save_png(fig: Figure, path: Path) -> Path:
    """Render ``fig`` with the Agg backend and write it to ``path`` (all or nothing)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


#: Up to this many rounds every round gets its tick; longer runs get whole-number ticks chosen by matplotlib.
EVERY_ROUND_TICKS = 20


def whole_rounds(ax: Axes, rounds: Sequence[int]) -> None:
    """Ticks on whole rounds only (a round is a count): every round of a short run, whole numbers otherwise;
    the axis spans the rounds drawn (a single round is not stretched into fractions around it)."""
    if not rounds:
        return
    first, last = int(min(rounds)), int(max(rounds))
    margin = max(0.25, 0.03 * (last - first))
    ax.set_xlim(first - margin, last + margin)
    if last - first + 1 <= EVERY_ROUND_TICKS:
        ax.set_xticks(range(first, last + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def accuracy_loss_figure(*, rows: Sequence[dict[str, Any]], initial: dict[str, Any] | None) -> Figure:
    """Accuracy (reported split, val, train) on a fixed 0-1 axis and loss per round; round 0 = the initial model."""
    points = ([{"round": 0, **initial}] if initial else []) + list(rows)
    rounds = [int(p["round"]) for p in points if isinstance(p.get("round"), (int, float))]
    fig = Figure(figsize=(10, 4))
    for ax, kind in zip(fig.subplots(1, 2), ("accuracy", "loss")):
        for key, label in ((kind, "global (reported split)"), (f"val_{kind}", "validation"),
                           (f"train_{kind}", "clients' training")):
            xy = [(p["round"], p[key]) for p in points if isinstance(p.get(key), (int, float))]
            if xy:
                ax.plot(*zip(*xy), marker="o", label=label)
        ax.set(xlabel="round", ylabel=kind, title=f"{kind} per round")
        if kind == "accuracy":
            ax.set_ylim(*SCORE_LIMITS)
        whole_rounds(ax, rounds)  # both panels over the same rounds
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return fig


def epsilon_figure(*, rounds: Sequence[int], epsilon: Sequence[float], budget: float | None = None,
                   label: str = "unit and delta not recorded") -> Figure:
    """Largest epsilon spent by any client after each round, from 0 (with the budget line when there is one)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(list(rounds), list(epsilon), marker="o", label=f"epsilon ({label})")
    if budget:
        ax.axhline(budget, color="tab:red", linestyle="--", label=f"budget {budget:g}")
    ax.set(xlabel="round", ylabel="epsilon", title="privacy spent (epsilon) per round")
    ax.set_ylim(bottom=0.0)
    whole_rounds(ax, [int(r) for r in rounds])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def confusion_figure(*, matrix: Sequence[Sequence[int]], title: str = "confusion matrix") -> Figure:
    """Row-normalised confusion matrix (colour = share of the true class, 0-1) with % and count per cell."""
    counts = np.asarray(matrix, dtype=np.int64)
    if counts.shape != (NUM_CLASSES, NUM_CLASSES):
        raise ValueError(f"confusion matrix must be {NUM_CLASSES}x{NUM_CLASSES}, got {counts.shape}")
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(7.5, 6.5))
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    for i, j in np.ndindex(counts.shape):
        ax.text(j, i, f"{100 * share[i, j]:.0f}%\n{counts[i, j]}", ha="center", va="center", fontsize=8,
                color="white" if share[i, j] > 0.5 else "black")
    ticks = range(NUM_CLASSES)
    ax.set_xticks(ticks, EMOTIONS, rotation=45, ha="right")
    ax.set_yticks(ticks, [f"{e} ({n})" for e, n in zip(EMOTIONS, counts.sum(axis=1))])
    ax.set(xlabel="predicted", ylabel="true (support)", title=title)
    return fig


def per_class_figure(*, per_class: dict[str, dict[str, float]]) -> Figure:
    """Grouped bars of precision, recall and F1 per emotion on a 0-1 axis (support under each name)."""
    names = [e for e in EMOTIONS if e in per_class]
    x = np.arange(len(names))
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    for k, metric in enumerate(("precision", "recall", "f1")):
        ax.bar(x + (k - 1) * 0.27, [per_class[n][metric] for n in names], width=0.27, label=metric)
    ax.set_xticks(x, [f"{n}\nn={per_class[n].get('support', '?')}" for n in names])
    ax.set(ylim=SCORE_LIMITS, ylabel="score", title="per-class precision, recall and F1")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def partition_figure(*, histogram: np.ndarray, groups: list[str] | None) -> Figure:
    """Clients x emotions heat map of training-sample counts: colour from 0 to the largest count, each cell's
    count written in it (up to 40 clients), a client's group and size in its label."""
    hist = np.asarray(histogram)
    if hist.ndim != 2 or hist.shape[1] != NUM_CLASSES or hist.shape[0] < 1:
        raise ValueError(f"histogram must be (clients, {NUM_CLASSES}), got shape {hist.shape}")
    if groups is not None and len(groups) != hist.shape[0]:
        raise ValueError(f"groups has {len(groups)} names for {hist.shape[0]} clients; give one per client")
    clients = hist.shape[0]
    top = max(float(hist.max()), 1.0)
    fig = Figure(figsize=(8, min(2.0 + 0.35 * clients, 20.0)))
    ax = fig.subplots()
    im = ax.imshow(hist, cmap="viridis", aspect="auto", vmin=0.0, vmax=top)
    fig.colorbar(im, ax=ax, label="samples (scale from 0)")
    if clients <= 40:
        for i, j in np.ndindex(hist.shape):
            ax.text(j, i, f"{int(hist[i, j])}", ha="center", va="center", fontsize=7,
                    color="black" if hist[i, j] > 0.6 * top else "white")
    step = max(1, math.ceil(clients / 40))
    rows = range(0, clients, step)
    ax.set_yticks(rows, [f"client {i}" + (f" ({groups[i]})" if groups else "") + f" n={int(hist[i].sum())}"
                         for i in rows])
    ax.set_xticks(range(NUM_CLASSES), EMOTIONS, rotation=45, ha="right")
    ax.set(title="training samples per client and class")
    return fig


def _name(label: int | str) -> str:
    return EMOTIONS[int(label)] if isinstance(label, (int, np.integer)) else str(label)


def attention_figure(*, images: np.ndarray, maps: np.ndarray, labels: Sequence[int | str],
                     predictions: Sequence[int | str]) -> Figure:
    """Faces with their attention map overlaid; titles true/predicted (green right, red wrong)."""
    images, maps = np.asarray(images), np.asarray(maps, dtype=np.float64)
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if images.ndim != 3 or images.shape[0] < 1 or maps.shape != images.shape:
        raise ValueError(f"images (N, H, W) and maps of the same shape expected; got images "
                         f"{images.shape}, maps {maps.shape}")
    if len(labels) != len(images) or len(predictions) != len(images):
        raise ValueError(f"need one label and one prediction per image ({len(images)}); got "
                         f"{len(labels)} labels, {len(predictions)} predictions")
    cols = min(len(images), 6)
    rows = math.ceil(len(images) / cols)
    fig = Figure(figsize=(2.0 * cols, 2.3 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, img, amap, y, p in zip(axes, images, maps, labels, predictions):
        amap = (amap - amap.min()) / max(float(np.ptp(amap)), 1e-12)
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        ax.imshow(amap, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ok = _name(y) == _name(p)
        ax.set_title(f"true {_name(y)}\npred {_name(p)}", fontsize=9, color="tab:green" if ok else "tab:red")
    fig.suptitle("where the model looks (attention)")
    return fig
