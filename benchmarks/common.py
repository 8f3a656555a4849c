"""What every benchmark records beside its figures: machine, versions, commit and command."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fer_models.federation.run_folder import CHECKPOINT_FILE, METRICS_FILE, SUMMARY_FILE
from simulation.launch.processes import kill_started, signals_raise, start_in_session

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
_PAGE = os.sysconf("SC_PAGE_SIZE")


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out = {"cpu": cpu, "cores": cores, "python": platform.python_version(), "torch": torch.__version__,
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    for pkg in ("opacus", "flwr", "numpy"):
        try:
            out[pkg] = __import__(pkg).__version__
        except Exception:  # noqa: BLE001
            out[pkg] = None
    return out


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def parse_pairs(items: list[str], *, flag: str = "--set") -> dict[str, str]:
    """``KEY=VALUE`` command-line items as a dict (later items win; fedfer's own ``--set`` parser); exits
    naming ``flag`` on a malformed one."""
    from fer_models.config import ConfigError
    from simulation.launch.experiment import parse_sets

    try:
        return parse_sets(items)
    except ConfigError as exc:
        raise SystemExit(f"{flag}: {exc}") from None


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """A Markdown table: one line per row, one column per (header, key, format spec).

    A value is written with ``format(value, spec)``. A missing (or None) value is blank, or
    ``failed`` when the row carries an ``"error"`` key (a measurement that did not complete).
    """
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for _, key, spec in columns:
            value = row.get(key)
            if value is None:
                cells.append("failed" if "error" in row else "")
            else:
                cells.append(format(value, spec).replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def recorded_results(name: str) -> Any:
    """The ``results`` of ``results/<name>.json`` as last written, or ``None`` when there is none yet."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text())["results"] if path.is_file() else None


def write_results(name: str, *, results: Any, table: str, notes: str = "") -> tuple[Path, Path]:
    """``results/<name>.json`` (figures + provenance) and ``results/<name>.md`` (the table)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": shlex.join(sys.argv),
            "commit": git_commit(), "machine": machine()}
    jpath, mpath = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    jpath.write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")
    m = meta["machine"]
    mpath.write_text(f"# {name}\n\n`{meta['command']}` at commit `{meta['commit'][:10]}`, {meta['date']}; "
                     f"{m['cpu']}, {m['cores']} cores, GPU {m['gpu']}, torch {m['torch']}, opacus {m['opacus']}.\n\n"
                     f"{table}\n\n{notes}\n")
    return jpath, mpath


def tree_memory(root: int) -> dict[str, int]:
    """Resident memory of ``root`` and all its descendants, read from /proc (Linux).

    ``rss`` sums each process's resident set (shared pages, e.g. the torch libraries every Ray
    worker maps, count once per process); ``pss`` shares them out (each page / its mappers).
    """
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out = {"rss": 0, "pss": 0, "procs": 0}
    todo = [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            out["rss"] += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    out["pss"] += int(line.split()[1]) * 1024
                    break
            out["procs"] += 1
        except (OSError, IndexError, ValueError):  # the process ended meanwhile
            continue
    return out


def simulate_command(sets: dict[str, Any], *, out: Path, data: str | None = None, resume: bool = False) -> list[str]:
    """The ``fedfer simulate`` subprocess command (this interpreter) of one benchmark run; ``resume``: continue
    the interrupted run in ``out`` with its own settings (``sets`` and ``data`` are then its checkpoint's)."""
    if resume:
        return [sys.executable, "-m", "simulation.commands.cli", "simulate", "--resume", str(out)]
    cmd = [sys.executable, "-m", "simulation.commands.cli", "simulate", "--out", str(out), "--overwrite"]
    cmd += ["--data", data] if data else []
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    return cmd


def run_fedfer(sets: dict[str, Any], *, out: Path, data: str | None = None, poll_s: float = 0.2,
               memory_every_s: float = 2.0, resume: bool = False) -> dict[str, Any]:
    """Run ``fedfer simulate`` in a subprocess (its own session: simulation/launch/processes.py), watching its rounds and the memory of its process tree.

    Round timing comes from the run's own ``metrics.jsonl``: every row's ``elapsed_s`` is measured
    by the server from one fixed instant, and the moment each row appears (polled every ``poll_s``
    by the file's size) anchors that instant to the start of the process. The memory is sampled every
    ``memory_every_s`` only: reading every process's smaps costs tens of ms of CPU, which at each poll
    would take a core from the run being measured. Returned: wall (s), the end of every round in
    seconds since the process started, steady rounds (2..R: each row's elapsed_s minus the
    previous one), start-up (end of round 1 minus one steady round: imports, data, Ray engine and
    actors, round-0 evaluation), tear-down (after the last round: report, Ray shutdown) and the
    peak resident memory of the whole process tree (the CLI, Ray's GCS/raylet and all workers).
    A one-round run has no steady round: only wall, rounds and memory are returned; so has a resumed one
    (``resume``: its earlier rounds' rows are in the file already), with ``resumed_after`` rounds.
    """
    out.mkdir(parents=True, exist_ok=True)
    cmd = simulate_command(sets, out=out, data=data, resume=resume)
    metrics = out / METRICS_FILE
    before = metrics.read_text().count("\n") if resume and metrics.exists() else 0
    if not resume:
        metrics.unlink(missing_ok=True)
    seen: list[float] = []  # when each metrics.jsonl line was first seen
    peak = {"rss": 0, "pss": 0, "procs": 0}
    size, sampled = -1, -memory_every_s
    with open(out / "simulate.log", "a" if resume else "w") as log, signals_raise():  # Ctrl-C or kill -TERM
        start = time.perf_counter()
        proc = start_in_session(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                done = proc.poll() is not None
                now = time.perf_counter() - start
                if metrics.exists() and metrics.stat().st_size != size:
                    size = metrics.stat().st_size
                    lines = metrics.read_text().count("\n")
                    seen += [now] * (lines - len(seen))
                if done:
                    break
                if now - sampled >= memory_every_s:
                    mem = tree_memory(proc.pid)
                    peak, sampled = {k: max(peak[k], mem[k]) for k in peak}, now
                time.sleep(poll_s)
        finally:  # Ctrl-C of the benchmark, or an error: stop the run's whole session (Ray included), by pid
            kill_started(proc.pid)
        wall = time.perf_counter() - start
    rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    res: dict[str, Any] = {"command": " ".join(cmd[1:]), "returncode": proc.returncode, "wall_s": wall,
                           "rounds": len(rows), "peak_rss_mb": peak["rss"] / 2**20,
                           "peak_pss_mb": peak["pss"] / 2**20, "peak_processes": peak["procs"]}
    if proc.returncode != 0 or not rows:
        tail = (out / "simulate.log").read_text().splitlines()[-15:]
        return {**res, "error": f"exit {proc.returncode}, {len(rows)} rounds; log tail:\n" + "\n".join(tail)}
    if resume:
        return {**res, "resumed_after": before}
    if len(rows) < 2:  # no steady round to separate start-up from: wall time only
        return res
    elapsed = [float(r["elapsed_s"]) for r in rows]
    anchor = min(t - e for t, e in zip(seen, elapsed))  # server clock zero, in process time
    ends = [anchor + e for e in elapsed]
    steady = [b - a for a, b in zip(elapsed, elapsed[1:])]
    per_round = sum(steady) / len(steady)
    return {**res, "round_end_s": ends, "steady_round_s": steady, "per_round_s": per_round,
            "startup_s": ends[0] - per_round, "teardown_s": wall - ends[-1],
            "final_accuracy": rows[-1].get("accuracy"), "accuracy_by_round": [r.get("accuracy") for r in rows],
            "loss_by_round": [r.get("loss") for r in rows],
            "clients_sampled": [r.get("clients_sampled") for r in rows], "steady_rows": rows[1:]}


def run_cell(name: str, settings: dict[str, Any], *, folder: Path, data: str | None, overwrite: bool = False) -> dict:
    """One benchmark cell: ``fedfer simulate`` into ``folder``, reusing a finished one (its ``summary.json``)
    unless ``overwrite`` and resuming an interrupted one (a checkpoint, no summary) after its last round. The
    wall time of every attempt adds up in ``folder/wall_s.txt``. Returns the summary's headline figures, or
    ``error``."""
    summary = folder / SUMMARY_FILE
    if summary.is_file() and not overwrite:
        print(f"{name}: reusing {summary}", flush=True)
    else:
        resume = (folder / CHECKPOINT_FILE).is_file() and not overwrite
        print(f"{name}: {'resuming ' + str(folder) if resume else 'running'}", flush=True)
        run = run_fedfer(settings, out=folder, data=data, resume=resume)  # its log: folder/simulate.log
        wall = folder / "wall_s.txt"
        spent = float(wall.read_text()) if resume and wall.is_file() else 0.0
        wall.write_text(f"{spent + run['wall_s']:.1f}\n")
        with open(folder / "measured.txt", "a") as log:  # each attempt's commit and date (a cell may span sessions)
            log.write(f"{git_commit()[:10]} {time.strftime('%Y-%m-%d %H:%M')} {run['wall_s']:.0f} s\n")
        if "error" in run:
            return {"variant": name, "error": run["error"], "settings": settings, "run_folder": str(folder)}
    s = json.loads(summary.read_text())
    wall = folder / "wall_s.txt"
    measured = folder / "measured.txt"
    return {"variant": name, "settings": settings, "accuracy": s["final"]["accuracy"],
            "measured": measured.read_text().splitlines() if measured.is_file() else [],
            "macro_f1": s["final"]["macro_f1"], "epsilon": (s.get("epsilon") or {}).get("final_max"),
            "wall_s": float(wall.read_text()) if wall.is_file() else None,
            "accuracy_by_round": [r["accuracy"] for r in s["rounds"]], "run_folder": str(folder)}
