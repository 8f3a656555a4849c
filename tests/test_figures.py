"""The run folder's figures, read off their matplotlib Figure objects: fixed 0-1 accuracy axes, whole round
ticks, a title on every figure, and a partition heat map whose colours start at 0 with every count written."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fer_models.audit.membership import RocResult
from fer_models.common.labels import EMOTIONS, NUM_CLASSES
from simulation.reports import audit_report, figures
from tests.test_report import _final, _rows


def _drawn(fig: Figure) -> Figure:
    FigureCanvasAgg(fig).draw()  # tick locators and limits are final once drawn
    return fig


def _titled(fig: Figure) -> bool:
    return bool(fig.get_suptitle()) or all(ax.get_title() for ax in fig.axes if ax.get_label() != "<colorbar>")


def _visible_ticks(ax) -> list[float]:
    lo, hi = sorted(ax.get_xlim())
    return [t for t in ax.get_xticks() if lo - 1e-9 <= t <= hi + 1e-9]


def _flat_rows(n: int, level: float) -> list[dict]:
    """A run whose accuracy barely moves (0.186-0.200): auto-scaling would zoom onto that band."""
    return [{"round": r, "accuracy": level + 0.007 * (r % 3), "loss": 1.9, "val_accuracy": level} for r in
            range(1, n + 1)]


@pytest.mark.parametrize("rounds", [1, 2, 3, 5])
def test_accuracy_axis_is_fixed_to_0_1_and_rounds_are_whole(rounds: int) -> None:
    fig = _drawn(figures.accuracy_loss_figure(rows=_flat_rows(rounds, 0.186), initial={"accuracy": 0.19}))
    acc, loss = fig.axes
    assert acc.get_ylim() == (0.0, 1.0)
    assert loss.get_ylim() != (0.0, 1.0)  # the loss keeps its own scale
    for ax in (acc, loss):
        ticks = _visible_ticks(ax)
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        assert set(range(0, rounds + 1)) <= {int(t) for t in ticks}  # a short run shows every round
    assert "accuracy" in acc.get_title() and "loss" in loss.get_title()


def test_the_report_rows_of_test_report_draw_with_whole_ticks() -> None:
    fig = _drawn(figures.accuracy_loss_figure(rows=_rows(3), initial=None))
    assert all(float(t).is_integer() for t in _visible_ticks(fig.axes[0]))


def test_epsilon_axis_starts_at_zero_with_whole_round_ticks() -> None:
    fig = _drawn(figures.epsilon_figure(rounds=[1, 2, 3], epsilon=[5.1, 5.2, 5.3], budget=8.0,
                                        label="image-level, delta 1e-05"))
    ax = fig.axes[0]
    assert ax.get_ylim()[0] == 0.0 and ax.get_ylim()[1] >= 8.0
    assert all(float(t).is_integer() for t in _visible_ticks(ax))
    assert ax.get_title()


def test_per_class_and_confusion_scores_are_on_0_1_scales() -> None:
    final = _final()
    per_class = _drawn(figures.per_class_figure(per_class=final["per_class"]))
    assert per_class.axes[0].get_ylim() == (0.0, 1.0)
    conf = _drawn(figures.confusion_figure(matrix=final["confusion_matrix"], title="final model"))
    assert conf.axes[0].images[0].get_clim() == (0.0, 1.0)
    assert conf.axes[0].get_title() == "final model"


def test_an_iid_partition_heat_map_scales_from_zero_and_writes_each_count() -> None:
    """Counts 29-31 per cell: a min-max colour scale would paint 29 black and 31 bright; from 0 they look alike."""
    rng = np.random.default_rng(0)
    hist = 30 + rng.integers(-1, 2, size=(4, NUM_CLASSES))
    fig = _drawn(figures.partition_figure(histogram=hist, groups=None))
    ax = fig.axes[0]
    vmin, vmax = ax.images[0].get_clim()
    assert vmin == 0.0 and vmax == hist.max()
    cmap, norm = ax.images[0].get_cmap(), ax.images[0].norm
    ours = np.abs(np.array(cmap(norm(hist.min()))) - np.array(cmap(norm(hist.max())))).max()
    min_max = np.abs(np.array(cmap(0.0)) - np.array(cmap(1.0))).max()  # what a min-max colour scale would show
    assert ours < 0.2 < 0.7 < min_max  # nearly equal counts, nearly equal colours
    texts = sorted(int(t.get_text()) for t in ax.texts)
    assert texts == sorted(hist.ravel().tolist())
    assert ax.get_title() and [t.get_text() for t in ax.get_xticklabels()] == list(EMOTIONS)


def test_a_skewed_partition_still_spans_the_colour_scale() -> None:
    """The control: a client holding one class shows as bright against dark empty cells."""
    hist = np.zeros((2, NUM_CLASSES), dtype=int)
    hist[0, 0], hist[1, 1:] = 100, 10
    ax = _drawn(figures.partition_figure(histogram=hist, groups=["a", "b"])).axes[0]
    cmap, norm = ax.images[0].get_cmap(), ax.images[0].norm
    assert np.abs(np.array(cmap(norm(0))) - np.array(cmap(norm(100)))).max() > 0.5


def _roc(n: int = 50) -> RocResult:
    fpr = np.linspace(0, 1, n)
    return RocResult(auc=0.66, tpr_at_fpr={0.01: 0.1}, fpr=fpr, tpr=np.sqrt(fpr), members=n, non_members=n)


def test_every_figure_has_a_title() -> None:
    final = _final()
    rng = np.random.default_rng(1)
    built = {
        "accuracy_loss": figures.accuracy_loss_figure(rows=_rows(3), initial=None),
        "epsilon": figures.epsilon_figure(rounds=[1, 2], epsilon=[0.5, 1.0]),
        "confusion": figures.confusion_figure(matrix=final["confusion_matrix"]),
        "per_class": figures.per_class_figure(per_class=final["per_class"]),
        "partition": figures.partition_figure(histogram=np.ones((3, NUM_CLASSES)), groups=None),
        "attention": figures.attention_figure(images=rng.integers(0, 255, (2, 8, 8)), maps=rng.random((2, 8, 8)),
                                              labels=[0, 1], predictions=[0, 2]),
        "audit_roc": audit_report.roc_figure(curves={"loss": _roc()}),
        "audit_canaries": audit_report.canary_figure(scores=rng.normal(size=40), included=rng.random(40) > 0.5),
    }
    untitled = [name for name, fig in built.items() if not _titled(_drawn(fig))]
    assert untitled == []


def test_the_linear_roc_panel_is_on_0_1_axes() -> None:
    linear = _drawn(audit_report.roc_figure(curves={"loss": _roc()})).axes[0]
    assert linear.get_xlim() == (0.0, 1.0) and linear.get_ylim() == (0.0, 1.0)
