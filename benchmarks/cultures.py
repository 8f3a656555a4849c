"""Cross-cultural generalization: in-culture accuracy per site, worst site and gap, and leave-one-culture-out.

    python benchmarks/cultures.py --name cultures_fedavg --fer2013 ../shared/data/fer2013 \
        --ckplus ../shared/data/ckplus48 --jaffe ../shared/data/jaffe --fer2013-train-per-class 300 \
        --set num-server-rounds=5 --set local-epochs=2

Cultures: FER2013 (mostly Western, in the wild), CK+ (US, posed), JAFFE (Japanese, posed). One run
federates all three (``partition=group``, one client per culture) and reports each culture's accuracy on
its own test split (in-culture), the worst one and the gap; one run per culture leaves it out
(``leave-out-group``) and reports the model on all of its images (held-out culture). The per-culture
confusion gives the fear -> surprise rate (East-Asian raters label fear as surprise more often).
FER2013 enters as a manifest of its first N training images per class plus its PrivateTest (paths into
the dataset folder: nothing is copied), so the three cultures weigh comparably. Writes
``results/<name>.json|md`` with every command.
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

_CLI = [sys.executable, "-m", "simulation.cli"]
FEAR, SURPRISE = 2, 5


def fer2013_manifest(root: Path, out: Path, *, per_class: int) -> Path:
    rows = ["path,label,split"]
    for cls in sorted(p.name for p in (root / "train").iterdir() if p.is_dir()):
        rows += [f"{p.resolve()},{cls},train" for p in sorted((root / "train" / cls).glob("Training_*"))[:per_class]]
        rows += [f"{p.resolve()},{cls},test" for p in sorted((root / "test" / cls).glob("PrivateTest_*"))]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(rows) + "\n")
    return out


def fear_as_surprise(matrix: list[list[int]]) -> float | None:
    fear = sum(matrix[FEAR])
    return matrix[FEAR][SURPRISE] / fear if fear else None


def _simulate(out: Path, data: str, sets: list[str]) -> tuple[dict, list[str], float]:
    cmd = _CLI + ["simulate", "--data", data, "--out", str(out), "--overwrite", *[a for kv in sets for a in ("--set", kv)]]
    if not (out / "summary.json").is_file():
        print("+", " ".join(cmd), flush=True)
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=REPO)
        seconds = time.perf_counter() - start
    else:
        seconds = float("nan")
    return json.loads((out / "summary.json").read_text()), cmd, seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="results file name (results/<name>.json|md)")
    for culture in ("fer2013", "ckplus", "jaffe"):
        p.add_argument(f"--{culture}", required=True, type=Path, help=f"{culture} folder")
    p.add_argument("--fer2013-train-per-class", type=int, default=300, help="FER2013 training images per class")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="simulate setting (repeatable)")
    p.add_argument("--out", type=Path, help="run folders (default: runs/<name>)")
    args = p.parse_args()
    out = (args.out or REPO / "runs" / args.name).resolve()
    manifest = fer2013_manifest(args.fer2013, out / "fer2013_subset.csv", per_class=args.fer2013_train_per_class)
    paths = {"fer2013": manifest, "ckplus": args.ckplus.resolve(), "jaffe": args.jaffe.resolve()}
    data = ",".join(f"{k}={v}" for k, v in paths.items())
    commands, rows = [], []
    together, cmd, seconds = _simulate(out / "all", data, ["partition=group", "num-clients=3", *args.set])
    commands.append(" ".join(cmd))
    for culture, group in together["groups"].items():
        rows.append({"culture": culture, "in": group["accuracy"], "n_in": group["n"],
                     "fear_in": fear_as_surprise(group["confusion_matrix"])})
    for row in rows:
        alone, cmd, _ = _simulate(out / f"without-{row['culture']}", data,
                                  ["partition=group", "num-clients=2", f"leave-out-group={row['culture']}", *args.set])
        commands.append(" ".join(cmd))
        row.update(held=alone["final"]["accuracy"], n_held=alone["final"]["n"],
                   fear_held=fear_as_surprise(alone["final"]["confusion_matrix"]))
    worst = min(rows, key=lambda r: r["in"])
    table = markdown_table(rows, [("culture", "culture", ""), ("in-culture accuracy (all three federated)", "in", ".4f"),
                                  ("n", "n_in", "d"), ("held-out-culture accuracy (left out)", "held", ".4f"),
                                  ("n", "n_held", "d"), ("fear -> surprise, in", "fear_in", ".2f"),
                                  ("fear -> surprise, held out", "fear_held", ".2f")])
    summary = (f"FedAvg, one client per culture: average in-culture accuracy {together['final']['accuracy']:.4f}, "
               f"worst site {worst['culture']} {worst['in']:.4f}, gap {together['group_gap']:.4f}; first run "
               f"{seconds:.0f} s.")
    write_results(args.name, results={"rows": rows, "worst_site": worst["culture"], "worst_accuracy": worst["in"],
                                      "gap": together["group_gap"], "average": together["final"]["accuracy"],
                                      "commands": commands},
                  table=table, notes=summary + "\n\nRuns:\n\n" + "\n".join(f"    {c}" for c in commands))
    print(table + "\n\n" + summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
