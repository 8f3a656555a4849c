"""The tree is clean under the project's ruff settings (pyproject.toml [tool.ruff])."""

import subprocess
import sys

from tests.procs import ROOT


def test_ruff_finds_nothing_to_fix():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 0, f"ruff check . (fix with `ruff check --fix .`):\n{done.stdout}{done.stderr}"
