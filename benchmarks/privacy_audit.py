"""Empirical privacy audit on real data: one federated run, then ``fedfer audit`` on its folder.

    nice -n 10 python benchmarks/privacy_audit.py --name audit_nonprivate --data ../shared/data/fer2013 \
        --set dp=none --set max-train-samples=3000 --set audit-canaries=500 ...
    nice -n 10 python benchmarks/privacy_audit.py --name audit_dp8 --data ../shared/data/fer2013 \
        --set dp=sample --set target-epsilon=8 --set max-train-samples=4000 --set audit-canaries=500 ...

Writes ``results/<name>.json|md`` (membership AUC and TPR at low FPR with the numbers of members and
non-members; the canary epsilon lower bound beside the accountant's epsilon), with the exact
simulate and audit commands. A run folder already holding summary.json under --out is audited again
rather than retrained.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, markdown_table, write_results  # noqa: E402
from fer_models.federation.run_folder import SUMMARY_FILE  # noqa: E402

_CLI = [sys.executable, "-m", "simulation.commands.cli"]


def _run(cmd: list[str]) -> float:
    print("+", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO)
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="results file name (results/<name>.json|md)")
    p.add_argument("--data", required=True, help="dataset path (FER2013 image folder)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="simulate setting (repeatable)")
    p.add_argument("--out", type=Path, help="run folder (default: runs/<name>)")
    p.add_argument("--max-samples", type=int, default=5000, help="fedfer audit --max-samples")
    p.add_argument("--note", default="", help="text appended under the table")
    args = p.parse_args()
    out = args.out or Path("runs") / args.name  # relative to the repository root (where the commands run)
    simulate = _CLI + ["simulate", "--data", args.data, "--out", str(out), "--overwrite",
                       *[a for kv in args.set for a in ("--set", kv)]]
    audit = _CLI + ["audit", str(out), "--max-samples", str(args.max_samples)]
    folder = REPO / out
    train_s = None if (folder / SUMMARY_FILE).is_file() else _run(simulate)
    audit_s = _run(audit)
    summary = json.loads((folder / SUMMARY_FILE).read_text())
    result = json.loads((folder / "audit.json").read_text())
    rows = []
    for name, a in result["membership"]["attacks"].items():
        rows.append({"attack": name, "auc": a["auc"], "adv": a["advantage"], "tpr1": a["tpr_at_fpr_0.01"],
                     "tpr01": a["tpr_at_fpr_0.001"], "members": a["members"], "non": a["non_members"]})
    table = markdown_table(rows, [("attack", "attack", ""), ("AUC", "auc", ".3f"), ("advantage", "adv", ".3f"),
                                  ("TPR at 1% FPR", "tpr1", ".4f"), ("TPR at 0.1% FPR", "tpr01", ".4f"),
                                  ("members", "members", "d"), ("non-members", "non", "d")])
    can = result.get("canaries")
    eps = summary.get("epsilon")
    shown = lambda cmd: "fedfer " + " ".join(cmd[3:])  # noqa: E731  (python -m simulation.commands.cli = fedfer)
    lines = [f"Run: `{shown(simulate)}` (trained in {train_s:.0f} s)" if train_s else
             f"Run: `{shown(simulate)}` (run folder reused; the run took {summary.get('seconds', 0):.0f} s)",
             f"Audit: `{shown(audit)}` ({audit_s:.0f} s).",
             f"Final {summary['final'].get('split')} accuracy {summary['final']['accuracy']:.4f} "
             f"(n={summary['final'].get('n')}); members: {result['membership']['members_from']}; non-members: "
             f"{result['membership']['non_members_from']}."]
    if can:
        reported = "none (dp=none)" if not eps else f"{eps['final_max']:.3f} ({eps['label']})"
        lines.append(f"Canaries: {can['count']} {can['kind']}, {can['included']} included; {can['correct']} of "
                     f"{can['guesses_in'] + can['guesses_out']} guesses right. Empirical epsilon lower bound "
                     f"**{can['epsilon_lower_bound']:.3f}** ({can['confidence']:.0%} confidence, {can['bound_label']}; "
                     f"the most these canaries could show: {can['attainable_bound']:.2f}); accountant's epsilon "
                     f"**{reported}**.")
    notes = "\n\n".join(lines + ([args.note] if args.note else []))
    write_results(args.name, results={"audit": result, "final": summary["final"], "epsilon": eps,
                                      "simulate": shown(simulate), "audit_command": shown(audit), "train_seconds": train_s,
                                      "audit_seconds": audit_s}, table=table, notes=notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
