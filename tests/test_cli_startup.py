"""`fedfer --help`, `fedfer CMD --help` and `--version` start without torch, Flower, Opacus, NumPy or matplotlib.

Each is checked in a fresh interpreter (this test process has long imported torch): once through the real
entry point under ``python -X importtime`` (every module the process imported is listed on stderr), and once
in-process after parsing, reading ``sys.modules``. Wall time is not asserted (CI timing is noisy); the
measured start-up times are in the issue 34 note.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "flwr", "opacus", "ray", "numpy", "matplotlib", "PIL", "onnx", "onnxruntime", "cv2", "sklearn")
COMMANDS = ("simulate", "partition", "report", "evaluate", "predict", "export", "deploy-local", "certs", "bench",
            "audit", "config", "models")


def _python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def _imported_top_level(importtime_stderr: str) -> set[str]:
    """Top-level packages named in ``-X importtime`` lines (``import time: self | cumulative | module``)."""
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_fedfer_help_through_the_entry_point_imports_no_heavy_package() -> None:
    done = _python("-X", "importtime", "-m", "simulation.commands.cli", "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: fedfer" in done.stdout and "simulate" in done.stdout
    imported = _imported_top_level(done.stderr)
    assert "simulation" in imported and "argparse" in imported  # the listing is real: it names what was loaded
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_every_subcommand_help_and_version_import_no_heavy_package() -> None:
    probe = f"""
import contextlib, io, json, sys
from simulation.commands.cli import main
out = {{}}
for argv in [["--help"], ["--version"]] + [[c, "--help"] for c in {list(COMMANDS)!r}]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code
    out[" ".join(argv)] = [code, buf.getvalue()[:200]]
print(json.dumps({{"runs": out, "heavy": [m for m in {list(HEAVY)!r} if m in sys.modules]}}))
"""
    done = _python("-c", probe)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    for argv, (code, text) in result["runs"].items():
        assert code == 0, argv
        assert text.startswith("fedfer " if argv == "--version" else "usage: fedfer"), (argv, text)


def test_importing_the_cli_and_building_the_parser_loads_no_torch() -> None:
    done = _python("-c", "import sys; from simulation.commands import cli; cli.build_parser(); "
                   "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'flwr', 'opacus')))")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_version_names_the_installed_package() -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        expected = version("fedfer")
    except PackageNotFoundError:
        pytest.skip("fedfer is not installed (source tree only)")
    done = _python("-m", "simulation.commands.cli", "--version")
    assert done.returncode == 0 and done.stdout.strip() == f"fedfer {expected}"


def test_errors_of_lazily_imported_modules_still_exit_2_with_one_line(monkeypatch, capsys, tmp_path) -> None:
    """DatasetError and CheckpointError are matched once their (heavy) module is loaded: still one line, exit 2."""
    from fer_models.data import DatasetError
    from server.checkpoint import CheckpointError
    from simulation.commands import cmd_report
    from simulation.commands.cli import main

    for exc in (DatasetError("the data is bad: fix it"), CheckpointError("the checkpoint is bad: fix it")):
        def boom(_args, exc=exc):
            raise exc
        monkeypatch.setattr(cmd_report, "run", boom)
        assert main(["report", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "bad: fix it" in err and "Traceback" not in err


def test_a_run_write_error_exits_1(monkeypatch, capsys, tmp_path) -> None:
    from simulation.commands import cmd_report
    from simulation.commands.cli import main
    from simulation.launch.launcher import RunWriteError

    def boom(_args):
        raise RunWriteError("cannot write the run folder: free some space and resume")
    monkeypatch.setattr(cmd_report, "run", boom)
    assert main(["report", str(tmp_path)]) == 1
    assert "free some space" in capsys.readouterr().err


def test_an_unexpected_runtime_error_is_not_swallowed(monkeypatch, tmp_path) -> None:
    """The lazy matching adds no catch-all: an error of no known kind still propagates."""
    from simulation.commands import cmd_report
    from simulation.commands.cli import main

    def boom(_args):
        raise RuntimeError("a bug")
    monkeypatch.setattr(cmd_report, "run", boom)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["report", str(tmp_path)])
