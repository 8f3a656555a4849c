"""Cross-cultural generalization: in-culture accuracy per site, worst site and gap, leave-one-culture-out,
and methods that target the worst site, each against FedAvg at the same federated compute.

    python benchmarks/cultures.py --name cultures_methods --fer2013 ../shared/data/fer2013 \
        --ckplus ../shared/data/ckplus48 --jaffe ../shared/data/jaffe --fer2013-train-per-class 500 \
        --set num-server-rounds=8 --set local-epochs=4 \
        --method fedavg --method "augment: augment=standard" --method "warm-start: pretrain-epochs=8"

Cultures: FER2013 (mostly Western, in the wild), CK+ (US, posed), JAFFE (Japanese, posed). Per method, one
run federates all three (``partition=group``, one client per culture) and reports each culture's accuracy
on its own test split (in-culture), the worst one and the gap; one run per culture leaves it out
(``leave-out-group``) and reports the model on all of its images (held-out culture). The per-culture
confusion gives the fear -> surprise rate (East-Asian raters label fear as surprise more often).
A method is ``NAME[: KEY=VALUE KEY=VALUE ...]``: run settings added to the common ``--set`` ones (the
first method is the reference, normally plain FedAvg); every method gets the same rounds and local
epochs, so the federated compute is equal. FER2013 enters as a manifest of its first N training images
per class plus its PrivateTest (paths into the dataset folder: nothing is copied), so the three cultures
weigh comparably. Runs go to ``runs/<name>/<method>/``; finished runs are reused, so an interrupted
benchmark resumes. Writes ``results/<name>.json|md`` with every command.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, markdown_table, parse_pairs, run_fedfer, simulate_command, write_results  # noqa: E402
from fer_models.federation.run_folder import SUMMARY_FILE  # noqa: E402

FEAR, SURPRISE = 2, 5
CULTURES = ("fer2013", "ckplus", "jaffe")


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


def ci95(accuracy: float, n: int) -> float:
    """Half-width of the normal-approximation 95% interval of an accuracy measured on n images."""
    return 1.96 * math.sqrt(accuracy * (1 - accuracy) / n) if n else float("nan")


def parse_method(text: str) -> tuple[str, list[str]]:
    """``"NAME: k=v k2=v2"`` -> ``("NAME", ["k=v", "k2=v2"])``; a bare ``NAME`` has no settings."""
    name, _, rest = text.partition(":")
    name, sets = name.strip(), shlex.split(rest)
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise SystemExit(f"--method {text!r}: the name before ':' must be letters, digits, - or _ (it names "
                         f"the run folder), e.g. --method 'augment: augment=standard'")
    bad = [kv for kv in sets if "=" not in kv]
    if bad:
        raise SystemExit(f"--method {text!r}: {bad} is not KEY=VALUE; write e.g. --method 'warm: pretrain-epochs=8'")
    return name, sets


def summarize(together: dict, held_out: dict[str, dict]) -> dict:
    """One method's figures from the all-cultures run's summary and each leave-one-out run's summary."""
    rows = []
    for culture, group in together["groups"].items():
        alone = held_out[culture]["final"]
        rows.append({"culture": culture, "in": group["accuracy"], "n_in": group["n"],
                     "ci_in": ci95(group["accuracy"], group["n"]),
                     "fear_in": fear_as_surprise(group["confusion_matrix"]),
                     "held": alone["accuracy"], "n_held": alone["n"],
                     "fear_held": fear_as_surprise(alone["confusion_matrix"])})
    worst = min(rows, key=lambda r: r["in"])
    return {"rows": rows, "worst_site": worst["culture"], "worst_accuracy": worst["in"],
            "gap": max(r["in"] for r in rows) - worst["in"], "average": together["final"]["accuracy"],
            "site_mean": sum(r["in"] for r in rows) / len(rows),
            "held_mean": sum(r["held"] for r in rows) / len(rows)}


def _simulate(out: Path, data: str, sets: list[str]) -> tuple[dict, str, float]:
    """One ``fedfer simulate`` run (benchmarks.common.run_fedfer), or the finished one already in ``out``."""
    pairs = parse_pairs(sets, flag="--method")
    cmd, seconds = " ".join(simulate_command(pairs, out=out, data=data)[1:]), float("nan")
    if not (out / SUMMARY_FILE).is_file():
        print("+", cmd, flush=True)
        run = run_fedfer(pairs, out=out, data=data)
        if "error" in run:
            raise SystemExit(f"{out}: fedfer simulate failed ({run['error']})")
        seconds = run["wall_s"]
    return json.loads((out / SUMMARY_FILE).read_text()), cmd, seconds


def run_method(out: Path, data: str, sets: list[str]) -> dict:
    together, cmd, seconds = _simulate(out / "all", data, ["partition=group", "num-clients=3", *sets])
    commands, held_out = [cmd], {}
    for culture in together["groups"]:
        held_out[culture], cmd, _ = _simulate(out / f"without-{culture}", data,
                                              ["partition=group", "num-clients=2", f"leave-out-group={culture}", *sets])
        commands.append(cmd)
    return {**summarize(together, held_out), "commands": commands, "seconds_all": seconds,
            "seconds_run": together.get("seconds")}


def comparison_rows(methods: dict[str, dict]) -> list[dict]:
    """One row per method with its change against the first (reference) method, in points."""
    ref = next(iter(methods.values()))
    rows = []
    for name, m in methods.items():
        row = {"method": name, "worst_site": m["worst_site"], "worst": m["worst_accuracy"], "average": m["average"],
               "site_mean": m["site_mean"], "gap": m["gap"], "held_mean": m["held_mean"],
               "d_worst": 100 * (m["worst_accuracy"] - ref["worst_accuracy"]),
               "d_average": 100 * (m["average"] - ref["average"]), "seconds": m.get("seconds_run")}
        row["meets"] = "yes" if row["d_worst"] >= 5 and row["d_average"] >= -1 else "no"
        rows.append(row)
    return rows


def plot(methods: dict[str, dict], path: Path) -> None:
    """In-culture (left) and held-out-culture (right) accuracy per culture, one bar per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    FigureCanvasAgg(fig)
    cultures = [r["culture"] for r in next(iter(methods.values()))["rows"]]
    width = 0.8 / len(methods)
    for ax, key, title in zip(fig.subplots(1, 2, sharey=True), ("in", "held"),
                              ("in-culture (all three federated)", "held-out culture (left out of training)")):
        for i, (name, m) in enumerate(methods.items()):
            by_culture = {r["culture"]: r[key] for r in m["rows"]}
            ax.bar([c + i * width for c in range(len(cultures))], [by_culture[c] for c in cultures], width,
                   label=name)
        ax.set_xticks([c + 0.4 - width / 2 for c in range(len(cultures))], cultures)
        ax.set_title(title)
        ax.set_ylim(0, 1)
    fig.axes[0].set_ylabel("accuracy")
    fig.axes[1].legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="results file name (results/<name>.json|md)")
    for culture in CULTURES:
        p.add_argument(f"--{culture}", required=True, type=Path, help=f"{culture} folder")
    p.add_argument("--fer2013-train-per-class", type=int, default=300, help="FER2013 training images per class")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="simulate setting for every method")
    p.add_argument("--method", action="append", default=[], metavar="'NAME: KEY=VALUE ...'",
                   help="a method to compare (repeatable; the first is the reference; default: fedavg alone)")
    p.add_argument("--out", type=Path, help="run folders (default: runs/<name>)")
    args = p.parse_args()
    methods_given = [parse_method(m) for m in (args.method or ["fedavg"])]
    out = (args.out or REPO / "runs" / args.name).resolve()
    manifest = fer2013_manifest(args.fer2013, out / "fer2013_subset.csv", per_class=args.fer2013_train_per_class)
    paths = {"fer2013": manifest, "ckplus": args.ckplus.resolve(), "jaffe": args.jaffe.resolve()}
    data = ",".join(f"{k}={v}" for k, v in paths.items())
    methods = {}
    for name, sets in methods_given:
        methods[name] = {"settings": sets, **run_method(out / name, data, [*args.set, *sets])}
        print(f"{name}: worst site {methods[name]['worst_site']} {methods[name]['worst_accuracy']:.4f}, "
              f"average {methods[name]['average']:.4f}", flush=True)
    per_culture = [{"method": n, **r} for n, m in methods.items() for r in m["rows"]]
    table = markdown_table(comparison_rows(methods), [
        ("method", "method", ""), ("worst site", "worst_site", ""), ("worst-site accuracy", "worst", ".4f"),
        ("change (points)", "d_worst", "+.1f"), ("average (all test images)", "average", ".4f"),
        ("change (points)", "d_average", "+.1f"), ("mean over sites", "site_mean", ".4f"), ("gap", "gap", ".4f"),
        ("mean held-out-culture", "held_mean", ".4f"), (">= +5 worst, >= -1 average", "meets", ""),
        ("seconds (all-cultures run)", "seconds", ".0f")])
    table += "\n\n" + markdown_table(per_culture, [
        ("method", "method", ""), ("culture", "culture", ""), ("in-culture accuracy (all three federated)", "in", ".4f"),
        ("n", "n_in", "d"), ("+- 95%", "ci_in", ".3f"), ("held-out-culture accuracy (left out)", "held", ".4f"),
        ("n", "n_held", "d"),
        ("fear -> surprise, in", "fear_in", ".2f"), ("fear -> surprise, held out", "fear_held", ".2f")])
    notes = ["Methods (settings added to the common ones: " + " ".join(args.set) + "):", ""]
    notes += [f"- {n}: {' '.join(m['settings']) or 'none (reference)'}" for n, m in methods.items()]
    notes += ["", "Runs:", ""] + [f"    {c}" for m in methods.values() for c in m["commands"]]
    notes += ["", f"Plot: `benchmarks/results/{args.name}.png`."]
    jpath, _ = write_results(args.name, results={"methods": methods, "common_settings": args.set}, table=table,
                             notes="\n".join(notes))
    plot(methods, jpath.with_suffix(".png"))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
