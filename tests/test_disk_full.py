"""A disk that fills up: the writer never leaves half a file, a run stops with one message and resumes.

The writer is made to fail the way a full disk does (half the bytes written, then ENOSPC) rather
than mounting a tiny file system, so the test runs anywhere; one test also uses a real 1 MB tmpfs
where this machine allows mounting one. The simulation test is the only one here that starts the
engine: round 1 of 2 is saved, the disk "fills" in round 2, and once space is back `--resume`
completes the run.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fer_models.common.atomic as atomic
from fer_models.common.atomic import AtomicWriteError, atomic_append_line, atomic_write_bytes

REPO = Path(__file__).resolve().parents[1]


def _fill_disk_after(monkeypatch: pytest.MonkeyPatch, *, writes: int) -> None:
    """The first ``writes`` writes succeed; every later one writes half its bytes, then hits ENOSPC."""
    real, done = atomic._write_and_sync, [0]

    def full(fh, data: bytes, *, path: Path) -> None:
        if done[0] >= writes:
            fh.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done[0] += 1
        real(fh, data, path=path)

    monkeypatch.setattr(atomic, "_write_and_sync", full)


def test_a_write_on_a_full_disk_keeps_the_previous_file_whole_and_names_the_file_and_the_free_space(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target, log = tmp_path / "summary.json", tmp_path / "metrics.jsonl"
    atomic_write_bytes(target, b'{"round": 1}\n')
    atomic_append_line(log, '{"round": 1}')
    _fill_disk_after(monkeypatch, writes=0)
    for write in (lambda: atomic_write_bytes(target, b'{"round": 2, "padding": "' + b"x" * 4096 + b'"}\n'),
                  lambda: atomic_append_line(log, '{"round": 2}')):
        with pytest.raises(AtomicWriteError) as caught:
            write()
        assert caught.value.errno == errno.ENOSPC and caught.value.disk_full
        message = str(caught.value)
        assert "No space left on device" in message and "free there" in message and "\n" not in message
    assert isinstance(caught.value, OSError)  # callers' `except OSError` still catch it
    assert json.loads(target.read_text()) == {"round": 1}
    assert [json.loads(line) for line in log.read_text().splitlines()] == [{"round": 1}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "summary.json"]  # no temporary file left


def test_a_real_full_tmpfs_gives_the_same_error_and_keeps_the_file(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not allowed here (the patched-writer tests cover the same path)")
    try:
        atomic_write_bytes(mnt / "checkpoint.pt", b"round 1" * 1000)
        with pytest.raises(AtomicWriteError, match=r"checkpoint\.pt: No space left on device; .* free there"):
            atomic_write_bytes(mnt / "checkpoint.pt", os.urandom(400_000))
        assert (mnt / "checkpoint.pt").read_bytes() == b"round 1" * 1000
        assert [p.name for p in mnt.iterdir()] == ["checkpoint.pt"]
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# `fedfer simulate` on a disk that fills up once the server has written round 1's checkpoint: every later write
# of the server's process gets half its bytes out, then ENOSPC (the clients run in Ray's worker processes)
_DRIVER = """
import errno, os, sys
import fer_models.common.atomic as atomic
real, full = atomic._write_and_sync, []
def write(fh, data, *, path):
    if full:
        fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    real(fh, data, path=path)
    if path.name == "checkpoint.pt":
        full.append(True)
atomic._write_and_sync = write
from simulation.commands.cli import main
sys.exit(main(sys.argv[1:]))
"""
SETTINGS = ["num-clients=2", "num-server-rounds=2", "synthetic-per-class=30", "synthetic-eval-per-class=10",
            "local-epochs=1", "batch-size=16", "dp=none", "min-client-samples=4"]


def _json_files_are_valid(run: Path) -> None:
    for path in run.rglob("*.json"):
        json.loads(path.read_text(), parse_constant=pytest.fail)
    for line in (run / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=pytest.fail)
    assert not list(run.glob(".*.tmp")), "a temporary file was left behind"


@pytest.mark.simulation
def test_a_run_whose_disk_fills_in_round_two_stops_with_one_message_keeps_round_one_and_resumes(tmp_path: Path):
    from server.checkpoint import load_checkpoint
    from simulation.predict.model_io import load_model_file

    run = tmp_path / "run"
    env = {**os.environ, "FEDFER_CACHE": str(tmp_path / "cache"), "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONUNBUFFERED": "1"}
    sets = [a for s in SETTINGS for a in ("--set", s)]
    proc = subprocess.run([sys.executable, "-c", _DRIVER, "simulate", "--out", str(run), *sets], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log[-4000:]
    assert "Traceback" not in log, log[-4000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("fedfer simulate: error: cannot write ") and "metrics.jsonl" in last, last
    assert "No space left on device" in last and "free there" in last, last
    assert "checkpoint.pt and model.pt keep round 1" in last and f"fedfer simulate --resume {run}" in last, last
    _json_files_are_valid(run)
    assert not (run / "summary.json").exists()
    ckpt = load_checkpoint(run)
    model, info = load_model_file(path=run)
    assert ckpt["round"] == info["round"] == 1
    assert [json.loads(line)["round"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    for key, value in model.state_dict().items():  # the model and the checkpoint are the same round-1 weights
        torch.testing.assert_close(value, ckpt["state_dict"][key], rtol=0, atol=0)

    # space is back: the run continues after round 1 and ends like any other
    resumed = subprocess.run([sys.executable, "-m", "simulation.commands.cli", "simulate", "--resume", str(run)], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    summary = json.loads((run / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert load_checkpoint(run)["round"] == 2
    _json_files_are_valid(run)
