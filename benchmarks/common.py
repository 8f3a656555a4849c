"""What every benchmark records beside its figures: machine, versions, commit and command."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


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


def write_results(name: str, *, results: Any, table: str, notes: str = "") -> tuple[Path, Path]:
    """``results/<name>.json`` (figures + provenance) and ``results/<name>.md`` (the table)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv),
            "commit": git_commit(), "machine": machine()}
    jpath, mpath = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    jpath.write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")
    m = meta["machine"]
    mpath.write_text(f"# {name}\n\n`{meta['command']}` at commit `{meta['commit'][:10]}`, {meta['date']}; "
                     f"{m['cpu']}, {m['cores']} cores, GPU {m['gpu']}, torch {m['torch']}, opacus {m['opacus']}.\n\n"
                     f"{table}\n\n{notes}\n")
    return jpath, mpath
