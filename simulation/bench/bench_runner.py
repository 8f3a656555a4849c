"""Runs benchmark cells one by one as ``fedfer simulate`` subprocesses, resuming what is already done.

A cell whose run folder holds a complete ``summary.json`` made with the cell's settings is skipped,
so an interrupted bench picks up where it stopped (an interrupted cell continues from its last
checkpoint). A failed cell is recorded with its error and log, and the bench goes on.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from fer_models.config import RunConfig
from fer_models.federation.run_folder import CHECKPOINT_FILE, CONFIG_FILE, SUMMARY_FILE
from simulation.bench.bench_grid import Cell

logger = logging.getLogger(__name__)

#: ``runner(argv, log_path) -> exit code``; tests inject a fake one.
Runner = Callable[[Sequence[str], Path], int]
#: What the bench writes beside a finished run: its wall time and command line.
CELL_FILE = "bench_cell.json"
REPO_ROOT = Path(__file__).resolve().parents[2]


def run_subprocess(argv: Sequence[str], log_path: Path) -> int:
    """Run ``argv`` with its output appended to ``log_path``; the per-round progress lines are echoed.

    The run gets its own process group: when the bench is interrupted, the whole run (Ray included)
    is stopped before the bench exits, and its last checkpoint lets the next bench resume it.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(argv)}\n")
        log.flush()
        proc = subprocess.Popen(list(argv), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, start_new_session=True)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if "| ETA" in line:  # the recorder's per-round line
                    logger.info("    %s", line.strip().split(": ", 1)[-1])
            return proc.wait()
        except BaseException:
            _stop_group(proc)
            raise


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGINT to the run's process group, then SIGTERM, then SIGKILL, each after a grace period."""
    for sig, grace in ((signal.SIGINT, 20.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def cell_argv(cell: Cell, *, data: str, run_dir: Path, resume: bool) -> list[str]:
    """The ``fedfer simulate`` command line of a cell (fresh, or continuing from its checkpoint)."""
    base = [sys.executable, "-m", "simulation.commands.cli", "simulate"]
    if resume:
        return base + ["--resume", str(run_dir)]
    argv = base + ["--data", data, "--out", str(run_dir), "--overwrite"]
    for key, value in cell.values.items():
        argv += ["--set", f"{key}={_text(value)}"]
    return argv


def cell_state(cell: Cell, *, run_dir: Path, data: str) -> tuple[str, str]:
    """``(state, detail)``: done | resume | fresh | other (results of different settings)."""
    expected = RunConfig.from_flat({**cell.values, "data-path": data}).to_flat()
    summary = read_json_object(run_dir / SUMMARY_FILE)
    saved = summary.get("config") if summary else read_json_object(run_dir / CONFIG_FILE)
    if saved:
        diffs = [f"{k}: {saved.get(k)!r} there, {v!r} here" for k, v in expected.items()
                 if k in {*cell.values, "data-path"} and saved.get(k) != v]
        if diffs:
            return "other", "; ".join(diffs)
    if summary and "accuracy" in summary.get("final", {}) and \
            len(summary.get("rounds", [])) == int(cell.values["num-server-rounds"]):
        return "done", "complete summary.json"
    if saved and (run_dir / CHECKPOINT_FILE).is_file():
        return "resume", "checkpoint.pt of an interrupted run"
    return "fresh", "no complete results"


def run_cells(cells: Sequence[Cell], *, out_dir: Path, data: str, overwrite: bool = False,
              runner: Runner = run_subprocess, clock: Callable[[], float] = time.monotonic) -> list[dict[str, Any]]:
    """Run (or skip) every cell in order; one record per cell: status done | skipped | failed."""
    records: list[dict[str, Any]] = []
    start = clock()
    ran_walls: list[float] = []
    for i, cell in enumerate(cells, 1):
        run_dir = out_dir / cell.dirname
        log_path = out_dir / "logs" / f"{cell.dirname}.log"
        record: dict[str, Any] = {"cell": cell.name, "strategy": cell.strategy, "setting": cell.setting,
                                  "run_dir": str(run_dir), "log": str(log_path)}
        state, detail = ("fresh", "--overwrite") if overwrite else cell_state(cell, run_dir=run_dir, data=data)
        tag = f"[{i}/{len(cells)}] {cell.name}"
        if state == "done":
            info = read_json_object(run_dir / CELL_FILE) or {}
            records.append({**record, "status": "skipped", "wall_s": info.get("wall_s"), "resumed": info.get("resumed", False),
                            "detail": "complete results from an earlier bench run"})
            logger.info("%s: already complete in %s, skipped", tag, run_dir)
            continue
        if state == "other":
            records.append({**record, "status": "failed", "wall_s": None,
                            "error": f"{run_dir} holds results of other settings ({detail}); pass --overwrite "
                                     f"or choose another --out"})
            logger.error("%s: %s", tag, records[-1]["error"])
            continue
        remaining = len(cells) - i + 1  # this cell included; skipped ones make it an upper bound
        eta = f"{sum(ran_walls) / len(ran_walls) * remaining / 60:.0f} min" if ran_walls else "?"
        logger.info("%s: %s | elapsed %.1f min | ETA %s | log %s", tag,
                    "resuming from its checkpoint" if state == "resume" else "running",
                    (clock() - start) / 60, eta, log_path)
        argv = cell_argv(cell, data=data, run_dir=run_dir, resume=state == "resume")
        t0 = clock()
        try:
            code = runner(argv, log_path)
        except OSError as exc:
            code, record["error"] = -1, f"could not start: {exc}"
        wall = clock() - t0
        ran_walls.append(wall)
        summary = read_json_object(run_dir / SUMMARY_FILE)
        if code == 0 and summary and "accuracy" in summary.get("final", {}):
            resumed = state == "resume"  # the wall time then covers the resumed rounds only
            _write_json(run_dir / CELL_FILE, {"wall_s": round(wall, 1), "resumed": resumed, "argv": list(argv)})
            records.append({**record, "status": "done", "wall_s": round(wall, 1), "resumed": resumed})
            final = summary["final"]
            logger.info("%s: done in %.0f s: accuracy %.4f, macro-F1 %.4f", tag, wall, final["accuracy"],
                        final.get("macro_f1", float("nan")))
        else:
            error = record.get("error") or f"exit code {code}: {_last_error(log_path)}"
            records.append({**record, "status": "failed", "wall_s": round(wall, 1), "error": error})
            logger.error("%s: FAILED after %.0f s (%s); log: %s", tag, wall, error, log_path)
    logger.info("bench finished in %.1f min: %d done, %d skipped, %d failed", (clock() - start) / 60,
                *(sum(r["status"] == s for r in records) for s in ("done", "skipped", "failed")))
    return records


def _last_error(log_path: Path) -> str:
    """The most telling line of a failed cell's log (an error line, else the last line)."""
    try:
        lines = [ln.strip() for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    for line in reversed(lines):
        if "error" in line.lower() or "Traceback" in line:
            return line[-300:]
    return lines[-1][-300:] if lines else "empty log"


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, obj: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
