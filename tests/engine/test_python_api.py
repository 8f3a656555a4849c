"""The Python API's example in docs/python-api.md runs as it is (a simulation, its evaluation and a
prediction) and gives what the run folder holds."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.engine.conftest import engine_env

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.simulation


def _example() -> str:
    text = (REPO / "docs" / "python-api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "docs/python-api.md holds one runnable example"
    return blocks[0]


def test_the_documented_example_runs_and_matches_its_run_folder(tmp_path: Path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "face.png")
    env = {**engine_env(tmp_path), "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", _example()], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3, proc.stdout  # only the example's prints reach stdout
    summary = json.loads((tmp_path / "runs" / "python-api" / "summary.json").read_text())
    accuracy, run_dir = lines[0].split(" ", 1)
    assert float(accuracy) == pytest.approx(summary["final"]["accuracy"])
    assert Path(run_dir) == Path("runs/python-api")
    val_accuracy, n = lines[1].split()
    assert int(n) == summary["dataset"]["sizes"]["val"] and 0.0 <= float(val_accuracy) <= 1.0
    image, emotion, probability = lines[2].split()
    assert image == "face.png" and emotion in summary["final"]["per_class"] and 0.0 < float(probability) <= 1.0
