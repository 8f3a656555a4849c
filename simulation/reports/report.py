"""A run folder's report: ``rounds.csv``, PNG plots and ``report.md`` (also figures the run draws).

Plots are drawn on matplotlib's non-interactive Agg canvas (no display, no pyplot state) at
~100 dpi and, like every file here, written atomically (temporary file, then rename).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fer_models.common.atomic import atomic_write_bytes
from fer_models.config import local_work_key
from fer_models.config.dp_trust import dp_trust
from fer_models.federation.run_folder import (
    ACCURACY_LOSS_FIGURE,
    ATTENTION_FIGURE,
    CONFIG_FILE,
    CONFUSION_FIGURE,
    EPSILON_FIGURE,
    METRICS_FILE,
    PARTITION_FIGURE,
    PER_CLASS_FIGURE,
    REPORT_FILE,
    ROUNDS_CSV,
    SUMMARY_FILE,
)
from fer_models.training.metrics import one_class_warning
from simulation.reports import figures
from simulation.reports.figures import save_png as _save
from simulation.reports.report_sites import sites_markdown

logger = logging.getLogger(__name__)

#: Figures the run itself draws; report.md embeds them when present.
EXTRA_FIGURES = ((PARTITION_FIGURE, "Client partition (samples per class)"),
                 (ATTENTION_FIGURE, "Attention maps of the final model"))
_SETTINGS = ("model", "rnn", "clip-length", "num-clients", "num-server-rounds", "fraction-train", "strategy",
             "partition", "dirichlet-alpha", "classes-per-client", "local-epochs", "local-steps", "local-epoch-fraction",
             "batch-size", "learning-rate", "optimizer", "augment", "class-balance", "dp", "dp-recipe", "frontend",
             "encoder", "frame-readout", "activation", "pretrain-epochs",
             "privacy-unit", "noise-multiplier", "target-epsilon", "target-delta", "max-grad-norm", "seed")
_ONLY_IF = {"rnn": ("model", "cnn_rnn"), "dirichlet-alpha": ("partition", "dirichlet"),
            "classes-per-client": ("partition", "shard")}
#: The keys that can size a client's local work: the report shows the one that did (config.local_work_key).
_LOCAL_WORK = ("local-epochs", "local-steps", "local-epoch-fraction")
_DP_KEYS = ("dp-recipe", "privacy-unit", "noise-multiplier", "target-epsilon", "target-delta", "max-grad-norm")


class ReportError(ValueError):
    """A run folder without the results a report is made from."""


# --- files ---------------------------------------------------------------------------------------

def _read_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            if line.strip():
                rows.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning("%s line %d is not valid JSON (an interrupted write?); skipped", path, n)
    return rows


def load_run(*, run_dir: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]], dict[str, Any]]:
    """``(summary or None, per-round rows, flat config)`` of a finished or unfinished run folder."""
    run_dir = Path(run_dir)
    summary_path, metrics_path = run_dir / SUMMARY_FILE, run_dir / METRICS_FILE
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir} is not a folder: give a run folder written by `fedfer simulate`")
    if not summary_path.is_file() and not metrics_path.is_file():
        raise ReportError(f"{run_dir} holds neither summary.json nor metrics.jsonl: not a run folder, or "
                          f"the run has not finished a round yet")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else None
    except json.JSONDecodeError as exc:
        raise ReportError(f"{summary_path} is not valid JSON ({exc}); the run may have been interrupted "
                          f"while writing it") from None
    rows = _read_rows(metrics_path) if metrics_path.is_file() else []
    if not rows and summary:
        rows = list(summary.get("rounds", []))
    if not rows:
        raise ReportError(f"{run_dir} has no completed rounds to report on yet")
    config = (summary or {}).get("config") or {}
    if not config and (run_dir / CONFIG_FILE).is_file():
        config = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    return summary, rows, config


def write_rounds_csv(*, rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """One row per round, one column per scalar metric (lists such as ``errors`` left out)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k, v in row.items() if k not in columns and isinstance(v, (int, float, str, bool))]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(Path(path), buf.getvalue().encode())
    return Path(path)


# --- plots (built in simulation/reports/figures.py, written here) -------------------------------------

def plot_accuracy_loss(*, rows: Sequence[dict[str, Any]], initial: dict[str, Any] | None, path: Path) -> Path:
    """Accuracy (fixed 0-1 axis) and loss per round; round 0 is the initial model."""
    return _save(figures.accuracy_loss_figure(rows=rows, initial=initial), path)


def plot_epsilon(*, rounds: Sequence[int], epsilon: Sequence[float], path: Path,
                 budget: float | None = None, label: str = "unit and delta not recorded") -> Path:
    """Largest epsilon spent by any client after each round (with the budget line when there is one);
    ``label`` names the unit, delta and owner (server/ledger.py epsilon_label)."""
    return _save(figures.epsilon_figure(rounds=rounds, epsilon=epsilon, budget=budget, label=label), path)


def plot_confusion_matrix(*, matrix: Sequence[Sequence[int]], path: Path, title: str = "confusion matrix") -> Path:
    """Row-normalised confusion matrix (colour = share of the true class) with % and count per cell."""
    return _save(figures.confusion_figure(matrix=matrix, title=title), path)


def plot_per_class(*, per_class: dict[str, dict[str, float]], path: Path) -> Path:
    """Grouped bars of precision, recall and F1 per emotion (support under each name)."""
    return _save(figures.per_class_figure(per_class=per_class), path)


def plot_partition_heatmap(*, histogram: np.ndarray, groups: list[str] | None, path: Path) -> Path:
    """Clients x emotions heatmap of training-sample counts from 0, counts annotated (a client's group in its label)."""
    return _save(figures.partition_figure(histogram=histogram, groups=groups), path)


def plot_attention_grid(*, images: np.ndarray, maps: np.ndarray, labels: Sequence[int | str],
                        predictions: Sequence[int | str], path: Path) -> Path:
    """Faces with their attention map overlaid; titles true/predicted (green right, red wrong)."""
    return _save(figures.attention_figure(images=images, maps=maps, labels=labels, predictions=predictions), path)


# --- report ------------------------------------------------------------------------------------------

def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _markdown(*, run_dir: Path, summary: dict[str, Any] | None, rows: Sequence[dict[str, Any]],
              config: dict[str, Any], images: Sequence[tuple[str, str]]) -> str:
    dataset = (summary or {}).get("dataset", {})
    final = (summary or {}).get("final") or rows[-1]
    planned = config.get("num-server-rounds", "?")
    status = "finished" if summary else f"UNFINISHED ({len(rows)} of {planned} rounds recorded)"
    out = [f"# fedfer report: {config.get('run-name', run_dir.name)}", "",
           f"Run folder `{run_dir}`; status: {status}; {len(rows)} rounds"
           + (f" in {summary['seconds']:.0f} s" if summary and "seconds" in summary else "") + ".", ""]
    synthetic = dataset.get("synthetic", summary is None and not config.get("data-path"))
    if synthetic or config.get("data-format") == "synthetic":
        out += ["> **WARNING: SYNTHETIC DATA.** These results come from generated cartoon faces, not real "
                "people. They test the pipeline only and say nothing about real emotion-recognition "
                "accuracy.", ""]
    out += ["## Dataset", "", "| name | source | reported split | split sizes |", "|---|---|---|---|",
            f"| {dataset.get('name', config.get('data-path') or 'synthetic')} | {dataset.get('source', '?')} | "
            f"{dataset.get('report_split', final.get('split', '?'))} | "
            f"{', '.join(f'{k}={v}' for k, v in dataset.get('sizes', {}).items()) or '?'} |", ""]
    settings = [k for k in _SETTINGS if k in config and (k not in _ONLY_IF or config.get(_ONLY_IF[k][0])
                                                         == _ONLY_IF[k][1])
                and (k not in _DP_KEYS or config.get("dp", "none") != "none")
                and (k not in _LOCAL_WORK or k == local_work_key(config))]
    out += ["## Settings", "", "| setting | value |", "|---|---|"]
    out += [f"| {k} | {config[k]} |" for k in settings] + ["", "All settings (as they ran, the DP recipe's "
                                                              "included): `config.json`; per round: "
                                                              "[rounds.csv](rounds.csv).", ""]
    per_client = (summary or {}).get("client_settings") or {}
    differing = {pid: {k: v for k, v in s.items() if config.get(k) != v} for pid, s in per_client.items()}
    if any(differing.values()):
        out += ["What each client trained with, where it differs from the table (the DP recipe sizes the batch "
                "and the learning rate to each client's data):", "",
                "| client | " + " | ".join(sorted({k for d in differing.values() for k in d})) + " |"]
        keys = sorted({k for d in differing.values() for k in d})
        out += ["|---|" + "---|" * len(keys)]
        out += [f"| {pid} | " + " | ".join(_fmt(per_client[pid].get(k, "")) for k in keys) + " |"
                for pid in per_client]
        out += [""]
    out += [f"## Final results ({final.get('split', '?')} split, n={final.get('n', '?')}, "
            f"round {rows[-1].get('round', '?')})", "", "| metric | value |", "|---|---|"]
    out += [f"| {label} | {_fmt(final[k])} |" for k, label in
            (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("weighted_f1", "weighted-F1"),
             ("macro_precision", "macro precision"), ("macro_recall", "macro recall"), ("loss", "loss"))
            if k in final]
    if final.get("one_class"):
        out += ["", f"**Warning:** {one_class_warning(final)}."]
    if final.get("per_class"):
        out += ["", "| emotion | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        out += [f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
                for name, m in final["per_class"].items()]
    out += sites_markdown(summary)
    eps = (summary or {}).get("epsilon")
    last_eps = rows[-1].get("epsilon_max")
    if eps or last_eps is not None:
        out += ["", "## Privacy", ""]
        if eps:
            out.append(f"dp={eps.get('level', '?')}: epsilon **{eps.get('final_max', 0):.3f}** "
                       f"({eps.get('label') or 'delta ' + str(eps.get('delta', '?'))})"
                       + (f", budget {eps['budget']:g}" if eps.get("budget") else "") + ".")
            if dp_trust(str(eps.get("level"))):
                out.append(f"Against whom: {dp_trust(str(eps.get('level')))}.")
            if eps.get("per_client"):
                units = eps.get("per_client_unit", {})
                out.append("Per client (each its own ledger, on its own node): " + ", ".join(
                    f"{k}: {v:.3f} ({units.get(k, 'image')}-level)" for k, v in eps["per_client"].items()) + ".")
            if eps.get("level") == "sample" and eps.get("unit") == "image" and (summary or {}).get("config", {}).get(
                    "privacy-unit") == "person":
                out.append("privacy-unit=person was asked for, but some clients' data has no subject ids "
                           "(e.g. FER2013): their epsilon protects one image, not one person.")
            for refusal in eps.get("refusals", []):
                out.append(f"- round {refusal.get('round')}: {refusal.get('reason')}")
            for skipped in eps.get("rounds_not_released", []):
                out.append(f"- round {skipped.get('round')} not released: {skipped.get('reason')}")
        else:
            out.append(f"Max epsilon so far: **{last_eps:.3f}**.")
    out += ["", "## Figures", ""] + [f"### {title}\n\n![{title}]({name})\n" for name, title in images]
    return "\n".join(out) + "\n"


def write_report(*, run_dir: Path) -> list[Path]:
    """Write rounds.csv, the plots and report.md into ``run_dir``; returns the files written."""
    run_dir = Path(run_dir)
    summary, rows, config = load_run(run_dir=run_dir)
    written = [write_rounds_csv(rows=rows, path=run_dir / ROUNDS_CSV),
               plot_accuracy_loss(rows=rows, initial=(summary or {}).get("initial"),
                                  path=run_dir / ACCURACY_LOSS_FIGURE)]
    images = [(ACCURACY_LOSS_FIGURE, "Accuracy and loss per round")]
    eps = (summary or {}).get("epsilon")
    eps_rows = [r for r in rows if isinstance(r.get("epsilon_max"), (int, float))]
    if (eps and eps.get("per_round_max")) or eps_rows:
        values = eps["per_round_max"] if eps and eps.get("per_round_max") else [r["epsilon_max"] for r in eps_rows]
        rounds = [r["round"] for r in (rows if len(rows) == len(values) else eps_rows)]
        if len(rounds) != len(values):
            rounds = list(range(1, len(values) + 1))
        written.append(plot_epsilon(rounds=rounds, epsilon=values, path=run_dir / EPSILON_FIGURE,
                                    budget=(eps or {}).get("budget"),
                                    label=(eps or {}).get("label", "unit and delta not recorded")))
        images.append((EPSILON_FIGURE, "Privacy spent per round"))
    final = (summary or {}).get("final", {})
    if final.get("confusion_matrix"):
        written.append(plot_confusion_matrix(
            matrix=final["confusion_matrix"], path=run_dir / CONFUSION_FIGURE,
            title=f"final model on {final.get('split', '?')} (n={final.get('n', '?')}, "
                  f"accuracy {final.get('accuracy', float('nan')):.3f})"))
        images.append((CONFUSION_FIGURE, "Confusion matrix (rows: true class)"))
    if final.get("per_class"):
        written.append(plot_per_class(per_class=final["per_class"], path=run_dir / PER_CLASS_FIGURE))
        images.append((PER_CLASS_FIGURE, "Per-class precision, recall and F1"))
    images += [(name, title) for name, title in EXTRA_FIGURES if (run_dir / name).is_file()]
    from simulation.reports.audit_report import audit_section  # issue 17: written by `fedfer audit`

    text = _markdown(run_dir=run_dir, summary=summary, rows=rows, config=config, images=images)
    text += audit_section(run_dir=run_dir)
    atomic_write_bytes(run_dir / REPORT_FILE, text.encode())
    written.append(run_dir / REPORT_FILE)
    logger.info("report written: %s", run_dir / REPORT_FILE)
    return written
