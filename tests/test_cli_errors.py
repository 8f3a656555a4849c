"""Bad input stops before anything trains, with one message naming what is wrong."""

from __future__ import annotations

import pytest
from PIL import Image

from simulation.commands.cli import main


def _run(capsys, *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    return rc, capsys.readouterr().err


def test_missing_data_path_is_named(capsys, tmp_path):
    rc, err = _run(capsys, "simulate", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"))
    assert rc == 2 and "nowhere" in err and "Traceback" not in err


def test_image_of_the_wrong_size_is_named(capsys, tmp_path, cache_dir):
    root = tmp_path / "fer"
    for split, cls in (("train", "happy"), ("test", "sad")):
        (root / split / cls).mkdir(parents=True)
        Image.new("L", (48, 48)).save(root / split / cls / f"{split}_ok.png")
    Image.new("L", (64, 64)).save(root / "train" / "happy" / "big.png")
    rc, err = _run(capsys, "simulate", "--data", str(root), "--out", str(tmp_path / "o"))
    assert rc == 2 and "big.png" in err and "48" in err


def test_unknown_key_and_wrong_type_are_named(capsys, tmp_path):
    rc, err = _run(capsys, "simulate", "--set", "local-epoch=2", "--out", str(tmp_path / "o"))
    assert rc == 2 and "local-epoch" in err and "local-epochs" in err
    rc, err = _run(capsys, "simulate", "--set", "batch-size=big", "--out", str(tmp_path / "o"))
    assert rc == 2 and "batch-size" in err and "integer" in err


def test_bad_experiment_file_line_is_named(capsys, tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("num-clients: 2\nseed: [oops\n")
    rc, err = _run(capsys, "simulate", str(exp), "--out", str(tmp_path / "o"))
    assert rc == 2 and "exp.yaml" in err and "line" in err


@pytest.mark.parametrize("model", ["nope"])
def test_unknown_model_lists_the_known_ones(capsys, tmp_path, model):
    rc, err = _run(capsys, "simulate", "--set", f"model={model}", "--out", str(tmp_path / "o"))
    assert rc == 2 and "cnn_rnn" in err


def test_an_out_path_that_is_a_file_is_named_without_a_traceback(capsys, tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    rc, err = _run(capsys, "simulate", "--out", str(blocker), "--set", "synthetic-per-class=10")
    assert rc == 2 and f"cannot use {blocker} as the run folder" in err and "file of that name" in err
    assert "Traceback" not in err


def test_a_bad_set_value_is_blamed_on_set_not_on_the_experiment_file(capsys, tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("num-clients: 2\n")
    rc, err = _run(capsys, "simulate", str(exp), "--set", "learning-rate=fast", "--out", str(tmp_path / "o"))
    assert rc == 2 and "--set: learning-rate='fast'" in err and "exp.yaml" not in err


def test_partition_errors_name_the_settings_not_internal_parameters(capsys, tmp_path):
    rc, err = _run(capsys, "partition", "--set", "num-clients=200", "--set", "synthetic-per-class=10")
    assert rc == 2 and "num-clients=200" in err and "min-client-samples=8" in err
    assert "num_partitions" not in err and "min_size" not in err


def test_overwrite_removes_the_old_run_s_results_but_resume_keeps_them(tmp_path):
    from server.run_folder import resolve_run_dir

    run = tmp_path / "run"
    old = ("summary.json", "metrics.jsonl", "model.pt", "checkpoint.pt", "failure.json", "report.md", "rounds.csv",
           "accuracy.png")
    run.mkdir()
    for name in (*old, "notes.txt"):
        (run / name).write_text("old run")
    resolve_run_dir(out_dir=str(run), run_name="x", overwrite=True, resume=True)
    assert (run / "checkpoint.pt").exists() and (run / "model.pt").exists() and not (run / "failure.json").exists()
    resolve_run_dir(out_dir=str(run), run_name="x", overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_version_prints_the_installed_packages_version(capsys):
    import tomllib
    from pathlib import Path

    from simulation.commands.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    declared = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["version"]
    assert capsys.readouterr().out.strip() == f"fedfer {declared}"
