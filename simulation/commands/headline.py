"""The headline of a finished (or failed) run, as ``fedfer simulate --json`` and ``deploy-local --json`` print it.

One JSON object from the run folder's summary.json (or failure.json): where the run is, what it trained on,
the final accuracy and, under DP, epsilon per client with its unit and delta. The full record stays in
summary.json; these keys are a subset of it under the same names (``final``, ``epsilon``, ``groups``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The epsilon keys the headline carries over from summary.json's ``epsilon`` (when present there).
EPSILON_KEYS = ("level", "unit", "delta", "label", "final_max", "per_client", "per_client_unit", "budget",
                "noise_multiplier", "trust")


def run_headline(*, summary: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """``run_dir``, ``dataset`` (name, synthetic), ``rounds``, ``final`` (split, accuracy, macro_f1), and
    ``epsilon`` (None without DP) / ``groups`` (per-site accuracy) as summary.json holds them."""
    final = summary.get("final") or {}
    dataset = summary.get("dataset") or {}
    eps = summary.get("epsilon")
    out: dict[str, Any] = {
        "status": "finished", "run_dir": str(run_dir),
        "dataset": {"name": dataset.get("name"), "synthetic": bool(dataset.get("synthetic"))},
        "rounds": len(summary.get("rounds") or []),
        "final": {**{k: final.get(k) for k in ("split", "accuracy", "macro_f1", "n")},
                  **({"one_class": final["one_class"]} if "one_class" in final else {})},
        "epsilon": {k: eps[k] for k in EPSILON_KEYS if k in eps} if eps else None,
    }
    if "groups" in summary:
        out["groups"] = summary["groups"]
        out["group_gap"] = summary.get("group_gap")
    return out


def failure_headline(*, failure: dict[str, Any], run_dir: Path, failure_path: Path) -> dict[str, Any]:
    """A run that failed in a round: no final accuracy; the round, the rounds completed and the reason."""
    return {"status": "failed", "run_dir": str(run_dir), "round": failure.get("round"),
            "last_good_round": failure.get("last_good_round"), "reason": failure.get("reason"),
            "details": str(failure_path)}


def one_class_line(summary: dict[str, Any]) -> str | None:
    """The console warning for a run whose final model predicts one class for almost every image (or None)."""
    final = summary.get("final") or {}
    if "one_class" not in final:
        return None
    from fer_models.training.metrics import one_class_warning

    return "WARNING: " + one_class_warning(final)


def text_headline(summary: dict[str, Any], *, where: str = "") -> list[str]:
    """The console lines of a finished run (``fedfer simulate``, ``deploy-local``): the final accuracy (``where``
    appended, e.g. " on 3 SuperNodes"), the one-class warning, accuracy per site and epsilon when there are any."""
    final = summary["final"]
    tag = " (SYNTHETIC faces)" if summary["dataset"]["synthetic"] else ""
    lines = [f"\n{summary['dataset']['name']}{tag}: final {final['split']} accuracy {final['accuracy']:.4f}, "
             f"macro-F1 {final['macro_f1']:.4f} after {len(summary['rounds'])} rounds{where}"]
    warning = one_class_line(summary)
    lines += [warning] if warning else []
    if "groups" in summary:
        lines.append("per site: " + ", ".join(f"{g} {v['accuracy']:.4f} (n={v['n']})"
                                              for g, v in summary["groups"].items())
                     + f"; gap {summary['group_gap']:.4f}")
    if "epsilon" in summary:
        eps = summary["epsilon"]
        lines.append(f"privacy: epsilon {eps['final_max']:.3f} ({eps.get('label') or 'delta ' + str(eps['delta'])})")
    return lines
