"""``fedfer audit RUN_DIR``: empirical privacy audit of a finished run (membership inference, and the
canary epsilon lower bound when the run planted canaries); writes audit.json, plots and report.md's section."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from simulation.commands.cli_common import add_json_flag, print_json

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="membership-inference and canary audit of a run: an empirical epsilon "
                       "lower bound beside the reported epsilon (canaries: run with --set audit-canaries=M)")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run folder written by `fedfer simulate`")
    p.add_argument("--data", help="dataset path, when the run's data-path does not resolve from here")
    p.add_argument("--max-samples", type=int, default=5000,
                   help="at most this many members and as many non-members (default 5000; 0 = all)")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence of the epsilon lower bound")
    p.add_argument("--batch-size", type=int, default=0, help="scoring batch size (default: eval-batch-size)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fer_models.federation.run_folder import REPORT_FILE
    from simulation.launch.output_paths import output_folder
    from simulation.reports.audit import run_audit
    if not 0 < args.confidence < 1:
        raise ValueError(f"--confidence must lie in (0, 1), got {args.confidence}")
    if args.max_samples < 0 or args.batch_size < 0:
        raise ValueError("--max-samples and --batch-size must be >= 0")
    if args.run_dir.is_dir():  # a missing one is named by run_audit
        output_folder(args.run_dir, flag="RUN_DIR", advice="copy the run folder somewhere writable and audit there")
    result = run_audit(run_dir=args.run_dir, data=args.data, max_samples=args.max_samples,
                       confidence=args.confidence, batch_size=args.batch_size)
    if args.json:
        _refresh_report(args.run_dir)
        print_json(args, {**result, "written": [str(args.run_dir / "audit.json"), str(args.run_dir / REPORT_FILE)]})
        return 0
    for name, a in result["membership"]["attacks"].items():
        print(f"{name} attack: AUC {a['auc']:.3f}, TPR {a['tpr_at_fpr_0.01']:.4f} at 1% FPR, "
              f"{a['tpr_at_fpr_0.001']:.4f} at 0.1% FPR ({a['members']} members, {a['non_members']} non-members)")
    can = result["canaries"]
    if can:
        reported = can["accountant_epsilon"]
        print(f"canaries: {can['count']} ({can['included']} included), {can['correct']} of "
              f"{can['guesses_in'] + can['guesses_out']} guesses right")
        print(f"empirical epsilon lower bound {can['epsilon_lower_bound']:.3f} ({can['confidence']:.0%} confidence, "
              f"{can['bound_label']}; at most {can['attainable_bound']:.2f} detectable with these canaries)")
        verdict = {None: "no claim to check", True: "consistent", False: "VIOLATED"}[can["consistent"]]
        print(f"accountant's epsilon {'none' if not math.isfinite(reported) else f'{reported:.3f}'} "
              f"({can['accountant_label']}): {verdict}")
    _refresh_report(args.run_dir)
    print(f"written: {args.run_dir / 'audit.json'}, report.md")
    return 0


def _refresh_report(run_dir: Path) -> None:
    """report.md with the audit's section; a folder the report cannot be drawn for only warns."""
    from simulation.reports.report import ReportError, write_report

    try:
        write_report(run_dir=run_dir)
    except ReportError as exc:
        logger.warning("report.md not updated: %s", exc)
