"""Output paths are checked before any work, and exported models are checked against their sidecar
before any inference: exit 2 and one line naming the path or the clip length, never a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_models.models import create_model
from fer_models.serving.export import export_model
from fer_models.serving.runtime import ExportedModelError, TorchPredictor, check_clip_length, load_exported
from fer_models.serving.video.compose import compose_video
from server.run_folder import save_model
from simulation.commands.cli import main

CHANNELS = (8, 8, 8, 8)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("cnn_rnn", channels=CHANNELS).eval()


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    save_model(run / "model.pt", state_dict=_model().state_dict(), model="cnn_rnn",
               model_options={"channels": list(CHANNELS)}, config={"clip-length": 3, "run-name": "r"},
               server_round=2, image_size=48)
    return run


@pytest.fixture()
def read_only(tmp_path: Path):
    """A folder nothing can be written into: mode 555, or (as root, who ignores modes) a read-only tmpfs."""
    folder = tmp_path / "rodir"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except PermissionError:
        yield folder
        folder.chmod(0o755)
        return
    (folder / "probe").unlink()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                      capture_output=True).returncode:
        folder.chmod(0o755)
        pytest.skip("running as root and a read-only tmpfs cannot be mounted here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)
        folder.chmod(0o755)


def _refused(capsys, argv: list[str], *needles: str, code: int = 2) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert rc == code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_export_into_a_folder_writes_the_default_file_inside_it(run_dir: Path, tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    assert main(["export", str(run_dir), "--format", "torchscript", "--out", str(runs)]) == 0
    assert sorted(p.name for p in runs.iterdir()) == ["model.json", "model.ts"]
    assert json.loads((runs / "model.json").read_text())["model_file"] == "model.ts"
    assert f"wrote {runs / 'model.ts'}" in capsys.readouterr().out


def test_export_into_a_read_only_folder_is_refused_naming_it(run_dir: Path, read_only: Path, capsys) -> None:
    _refused(capsys, ["export", str(run_dir), "--format", "onnx", "--out", str(read_only / "model.onnx")],
             f"cannot write into {read_only} (--out)", "choose another --out")
    _refused(capsys, ["export", str(run_dir), "--out", str(read_only / "sub" / "model.onnx")],
             f"cannot write into {read_only}", "nearest existing folder")
    assert not any(read_only.iterdir())


def test_export_under_a_file_or_with_another_suffix_is_refused(run_dir: Path, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    _refused(capsys, ["export", str(run_dir), "--out", str(blocker / "model.onnx")], f"{blocker} is a file")
    _refused(capsys, ["export", str(run_dir), "--format", "torchscript", "--out", str(tmp_path / "m.onnx")],
             "files end in .ts", f"--out {tmp_path / 'm.ts'}")


def test_every_command_s_output_folder_is_checked_before_work(run_dir: Path, read_only: Path, tmp_path: Path,
                                                              capsys) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    video = tmp_path / "v.mp4"
    compose_video(video, faces=[[np.full((48, 48), 128, np.uint8)]], frames=2)
    _refused(capsys, ["predict", "--video", str(video), "--model", str(run_dir), "--out", str(read_only / "o")],
             f"cannot write into {read_only} (--out")
    _refused(capsys, ["predict", "--video", str(video), "--model", str(run_dir), "--out", str(blocker)],
             f"--out {blocker} is a file")
    _refused(capsys, ["evaluate", str(run_dir), "--out", str(read_only / "eval")], f"cannot write into {read_only}")
    _refused(capsys, ["certs", str(read_only / "tls")], f"cannot write into {read_only} (DIR")
    _refused(capsys, ["partition", "--out", str(blocker), "--set", "synthetic-per-class=10"], f"--out {blocker} is a file")
    _refused(capsys, ["report", str(read_only)], f"cannot write into {read_only} (RUN_DIR)", "somewhere writable")
    _refused(capsys, ["simulate", "--out", str(read_only / "run"), "--set", "synthetic-per-class=10"],
             f"cannot use {read_only / 'run'} as the run folder")


def _video(tmp_path: Path) -> Path:
    video = tmp_path / "v.mp4"
    compose_video(video, faces=[[np.full((48, 48), 128, np.uint8)]], frames=2)
    return video


@pytest.fixture(scope="module")
def onnx3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ONNX export (its graph fixed at 3 frames) shared by the tests below: ONNX export is slow."""
    path = tmp_path_factory.mktemp("onnx3") / "model.onnx"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    export_model(model=_model(), out=path, fmt="onnx", clip_length=3)
    torch.set_num_threads(before)
    return path


def _exported(fmt: str, onnx3: Path, folder: Path) -> Path:
    if fmt == "onnx":
        for f in (onnx3, onnx3.with_suffix(".json")):
            shutil.copy(f, folder / f.name)
        return folder / onnx3.name
    export_model(model=_model(), out=folder / "model.ts", fmt="torchscript", clip_length=3)
    return folder / "model.ts"


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_exported_model_whose_sidecar_says_another_clip_length_is_refused_before_inference(
        fmt: str, onnx3: Path, tmp_path: Path, capsys, one_thread) -> None:
    model_path = _exported(fmt, onnx3, tmp_path)  # the graph is unrolled over 3 frames
    side = model_path.with_suffix(".json")
    side.write_text(json.dumps({**json.loads(side.read_text()), "clip_length": 1}))
    line = _refused(capsys, ["predict", "--video", str(_video(tmp_path)), "--model", str(model_path),
                             "--out", str(tmp_path / "o")],
                    f"{model_path} takes clips of 3 frame(s), but its sidecar {side} says 1", "--clip-length 3")
    assert "Expected" not in line and not (tmp_path / "o").exists()


def test_two_exports_sharing_one_sidecar_refuse_the_one_it_does_not_describe(onnx3: Path, tmp_path: Path, capsys,
                                                                             one_thread) -> None:
    _exported("onnx", onnx3, tmp_path)
    export_model(model=_model(), out=tmp_path / "model.ts", fmt="torchscript", clip_length=1)  # replaces model.json
    _refused(capsys, ["predict", "--video", str(_video(tmp_path)), "--model", str(tmp_path / "model.onnx")],
             "model.json describes model.ts (torchscript, clip length 1), not model.onnx", "--out")
    assert load_exported(tmp_path / "model.ts").clip_length == 1  # the export the sidecar describes loads


class _FixedLength(torch.nn.Module):  # a model that, like a traced recurrent graph, takes 3 frames only
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = x.unbind(1)
        return (a + b + c).flatten(1)[:, :7]


def test_a_pytorch_model_that_takes_another_clip_length_is_named_too() -> None:
    predictor = TorchPredictor(_FixedLength(), clip_length=1, image_size=48, source="model.pt")
    with pytest.raises(ExportedModelError, match=r"model.pt takes clips of 3 frame\(s\), but its run config says 1"):
        check_clip_length(predictor, what="its run config")
    check_clip_length(TorchPredictor(_FixedLength(), clip_length=3, image_size=48, source="model.pt"), what="-")
