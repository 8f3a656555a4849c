"""``fedfer bench paper``: the paper's table (strategies x settings, ``experiments/paper.yaml``), one command.

Every cell runs as its own ``fedfer simulate`` subprocess into ``--out/<strategy>-<setting>``; cells
already complete there are skipped, so an interrupted bench resumes. The table, with the machine,
versions, commit and command, goes to ``benchmarks/results/paper_<profile>.json/.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

logger = logging.getLogger("fedfer")

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_GRID = REPO_ROOT / "experiments" / "paper.yaml"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark grid and record its table under benchmarks/results/")
    benches = p.add_subparsers(dest="bench", required=True)
    q = benches.add_parser("paper", help="the paper's table: 3 strategies x 4 settings on FER2013, every cell "
                           "with the same sample-gradient budget")
    q.add_argument("--profile", required=True, metavar="cpu|gpu", help="budget profile of the grid file")
    q.add_argument("--data", required=True, help="FER2013 (Kaggle image folder or the CSV)")
    q.add_argument("--grid", type=Path, default=DEFAULT_GRID, help="grid file (default: experiments/paper.yaml)")
    q.add_argument("--out", type=Path, help="folder of the cells' runs (default: runs/bench-paper-PROFILE)")
    q.add_argument("--only", metavar="STRATEGY/SETTING,...", help="run only these cells (* wildcards allowed)")
    q.add_argument("--overwrite", action="store_true", help="run cells again even when their results are complete")
    q.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="change the profile for a trial (e.g. epochs=1, max-train-samples=2000); the table then "
                   "goes to --out only, not to benchmarks/results/")
    q.set_defaults(func=run_paper)


def run_paper(args: argparse.Namespace) -> int:
    from simulation.bench.bench_grid import load_grid, select_cells
    from simulation.bench.bench_runner import run_cells
    from simulation.launch.experiment import parse_sets
    from simulation.launch.output_paths import output_folder

    grid = load_grid(args.grid)
    sets = parse_sets(args.sets)
    cells = grid.cells(args.profile, sets=sets)
    selected = select_cells(cells, args.only)
    data = Path(args.data)
    if not data.exists():
        raise FileNotFoundError(f"--data {data} does not exist: give the FER2013 image folder or CSV")
    out = output_folder((args.out or Path("runs") / f"bench-paper-{args.profile}").resolve(), flag="--out")
    logger.info("bench paper, profile %s: %d of %d cells into %s", args.profile, len(selected), len(cells), out)
    records = run_cells(selected, out_dir=out, data=str(data.resolve()), overwrite=args.overwrite)
    rows = table_rows(cells=cells, records=records, out_dir=out, data=str(data.resolve()))
    record_table(profile=args.profile, budget=grid.profile(args.profile, sets=sets), rows=rows, out_dir=out,
                 grid=_shown(args.grid), trial=bool(sets))
    return 1 if any(r["status"] == "failed" for r in records) else 0


def table_rows(*, cells: list, records: list[dict[str, Any]], out_dir: Path, data: str) -> list[dict[str, Any]]:
    """One row per cell of the grid (in grid order) with its figures: cells not selected this time
    count when their folder holds complete results with the same settings."""
    from simulation.bench.bench_runner import CELL_FILE, cell_state
    from simulation.bench.bench_table import collect

    by_name = {r["cell"]: r for r in records}
    rows = []
    for cell in cells:
        if cell.name in by_name:
            rows.append(by_name[cell.name])
            continue
        run_dir = out_dir / cell.dirname
        state, _ = cell_state(cell, run_dir=run_dir, data=data)
        info = _read_json(run_dir / CELL_FILE)
        rows.append({"cell": cell.name, "strategy": cell.strategy, "setting": cell.setting, "run_dir": str(run_dir),
                     "status": "skipped" if state == "done" else "not run",
                     "wall_s": info.get("wall_s") if info else None,
                     "resumed": bool(info and info.get("resumed"))})
    return collect(rows)


def record_table(*, profile: str, budget: dict[str, Any], rows: list[dict[str, Any]], out_dir: Path, grid: str,
                 trial: bool, write_results: Callable[..., Any] | None = None) -> None:
    """``OUT/bench.json`` + ``OUT/table.md`` always; ``benchmarks/results/paper_<profile>.*`` unless a trial."""
    from fer_models.common.atomic import atomic_write_bytes
    from simulation.bench.bench_table import markdown_table, notes

    total = sum(float(r["wall_s"]) for r in rows if "accuracy" in r and r.get("wall_s") is not None)
    table = markdown_table(rows)
    text = notes(profile=profile, budget=budget, rows=rows, cores=len(os.sched_getaffinity(0)), total_wall_s=total,
                 grid=grid)
    results = {"profile": profile, "grid": grid, "budget": budget, "trial": trial, "total_wall_s": round(total, 1),
               "cells": rows}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "bench.json", (json.dumps(results, indent=2, default=str) + "\n").encode())
    atomic_write_bytes(out_dir / "table.md", f"{table}\n\n{text}\n".encode())
    print(f"\n{table}\n\n{text}\n")
    if trial:
        logger.warning("--set changed the profile: this is a trial, so the table is only in %s (not in "
                       "benchmarks/results/)", out_dir / "table.md")
        return
    write_results = write_results or _load_benchmarks_common().write_results
    jpath, mpath = write_results(f"paper_{profile}", results=results, table=table, notes=text)
    logger.info("results: %s and %s; `python benchmarks/collect.py` updates benchmarks/RESULTS.md", jpath, mpath)


def _load_benchmarks_common() -> ModuleType:
    """``benchmarks/common.py`` of this checkout (an unrelated ``benchmarks`` package may be installed)."""
    path = REPO_ROOT / "benchmarks" / "common.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: fedfer bench records its results in a source checkout")
    spec = importlib.util.spec_from_file_location("benchmarks_common", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
