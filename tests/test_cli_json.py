"""``--json``: every command that prints a result prints one JSON object on stdout and nothing else.

Each object is checked against what the command wrote to disk (evaluation.json, the export sidecar,
partition.json, audit.json, the report's files) or against the library call it wraps. No test here starts
Ray: simulate/deploy-local's headline is checked from a summary.json built the way tests/test_report.py does.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from fer_models.config import RunConfig
from fer_models.models.from_config import build_model
from server.run_folder import save_model
from simulation.commands.cli import main
from simulation.commands.headline import run_headline
from tests.test_report import make_run

SETTINGS = {"data-format": "synthetic", "synthetic-per-class": 20, "synthetic-eval-per-class": 10,
            "eval-batch-size": 64, "model": "cnn", "num-clients": 2}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder as the server writes it, minus training: an initial cnn's model.pt and config.json."""
    cfg = RunConfig.from_flat(SETTINGS)
    run = tmp_path_factory.mktemp("run")
    save_model(run / "model.pt", state_dict=build_model(cfg).state_dict(), model="cnn", model_options={},
               image_size=48, config=cfg.to_flat(), server_round=1)
    (run / "config.json").write_text(json.dumps(cfg.to_flat()))
    return run


def _json_only(capsys) -> tuple[dict, str]:
    """The whole of stdout parsed as one JSON object (fails on any other line there), and stderr."""
    captured = capsys.readouterr()
    obj = json.loads(captured.out)
    assert isinstance(obj, dict)
    return obj, captured.err


def test_evaluate_json_is_the_written_evaluation(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "e"
    assert main(["evaluate", str(run_dir), "--out", str(out), "--json"]) == 0
    obj, _ = _json_only(capsys)
    written = json.loads((out / "evaluation.json").read_text())
    assert {k: v for k, v in obj.items() if k != "written"} == written
    assert obj["n"] == 70 and 0.0 <= obj["accuracy"] <= 1.0
    assert obj["written"] == [str(out / "evaluation.json"), str(out / "confusion_matrix.png")]
    assert all(Path(p).is_file() for p in obj["written"])


def test_evaluate_without_json_prints_the_table_not_json(run_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["evaluate", str(run_dir), "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "precision" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


def test_export_json_matches_the_sidecar_and_the_file(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.ts"
    assert main(["export", str(run_dir), "--format", "torchscript", "--out", str(out), "--json"]) == 0
    obj, _ = _json_only(capsys)
    side = json.loads(Path(obj["sidecar_path"]).read_text())
    assert obj["model_path"] == str(out) and obj["format"] == "torchscript" and obj["quantize"] == "none"
    assert obj["size_bytes"] == out.stat().st_size == side["size_bytes"]
    assert obj["parity"] == side["parity"] and obj["parity"]["passed"] is True
    assert obj["clip_length"] == side["clip_length"] == 1


def test_onnx_export_is_quiet_and_its_json_alone_on_stdout(run_dir: Path, tmp_path: Path, capsys, caplog) -> None:
    """The ONNX exporter logs each graph pass at INFO (onnx_ir, onnxscript): none of it reaches the console."""
    caplog.set_level(logging.INFO)
    out = tmp_path / "m.onnx"
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(out), "--json"]) == 0
    obj, err = _json_only(capsys)
    assert obj["model_path"] == str(out) and obj["size_bytes"] == out.stat().st_size
    chatter = [r for r in caplog.records if r.levelno < logging.WARNING
               and r.name.split(".")[0] in ("onnx_ir", "onnxscript", "onnx", "torch")]
    assert chatter == [], [f"{r.name}: {r.getMessage()}" for r in chatter[:5]]
    assert any(r.name == "fer_models.serving.export" for r in caplog.records)  # fedfer's own line still comes
    assert "onnx_ir" not in err and "onnxscript" not in err


def test_partition_json_is_partition_json_plus_the_dataset(tmp_path: Path, capsys, cache_dir) -> None:
    out = tmp_path / "p"
    assert main(["partition", "--set", "num-clients=3", "--set", "synthetic-per-class=10",
                 "--set", "synthetic-eval-per-class=5", "--out", str(out), "--json"]) == 0
    obj, _ = _json_only(capsys)
    written = json.loads((out / "partition.json").read_text())
    assert {k: obj[k] for k in written} == written
    assert obj["dataset"]["synthetic"] is True and obj["num_clients"] == 3
    assert sum(c["size"] for c in obj["clients"]) == 7 * 10
    assert obj["written"] == [str(out / "partition.json"), str(out / "partition.png")]


def test_config_and_models_json_list_what_the_library_lists(capsys) -> None:
    from fer_models.config import describe_keys
    from fer_models.models import create_model, list_models

    assert main(["config", "--json"]) == 0
    obj, _ = _json_only(capsys)
    assert [s["key"] for s in obj["settings"]] == [k for k, _, _ in describe_keys()]
    assert {s["key"]: s["default"] for s in obj["settings"]}["num-clients"] == RunConfig().num_clients
    assert main(["models", "--json"]) == 0
    obj, _ = _json_only(capsys)
    assert [m["name"] for m in obj["models"]] == list(list_models())
    cnn = next(m for m in obj["models"] if m["name"] == "cnn")
    assert cnn["parameters"] == sum(p.numel() for p in create_model("cnn").parameters())


def test_report_json_names_the_files_it_wrote(tmp_path: Path, capsys) -> None:
    run = make_run(tmp_path)
    assert main(["report", str(run), "--json"]) == 0
    obj, _ = _json_only(capsys)
    assert obj["run_dir"] == str(run)
    assert {Path(p).name for p in obj["written"]} >= {"rounds.csv", "accuracy_loss.png", "epsilon.png", "report.md"}
    assert all(Path(p).is_file() for p in obj["written"])


def test_audit_json_is_the_written_audit(run_dir: Path, capsys) -> None:
    assert main(["audit", str(run_dir), "--max-samples", "30", "--json"]) == 0
    obj, _ = _json_only(capsys)
    written = json.loads((run_dir / "audit.json").read_text())
    assert {k: v for k, v in obj.items() if k != "written"} == written
    assert set(obj["membership"]["attacks"]) >= {"loss"} and obj["canaries"] is None
    assert obj["written"][0] == str(run_dir / "audit.json")


def test_predict_json_goes_through_the_same_printer(run_dir: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    face = tmp_path / "face.png"
    Image.new("L", (64, 64), color=128).save(face)
    assert main(["predict", str(face), "--model", str(run_dir), "--top", "2", "--json"]) == 0
    obj, _ = _json_only(capsys)
    top = obj["images"][0]["top"]
    assert obj["images"][0]["image"] == str(face) and len(top) == 2
    assert top[0]["probability"] >= top[1]["probability"]


def test_the_run_headline_carries_final_accuracy_and_epsilon_per_client_with_unit_and_delta(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    summary["epsilon"]["unit"] = "image"
    head = run_headline(summary=summary, run_dir=run)
    assert head["status"] == "finished" and head["run_dir"] == str(run) and head["rounds"] == 3
    assert head["final"] == {"split": "test", "accuracy": 0.6123, "macro_f1": 0.5511, "n": summary["final"]["n"]}
    assert head["dataset"] == {"name": "synthetic", "synthetic": True}
    eps = head["epsilon"]
    assert eps["per_client"] == {"0": 1.5, "1": 1.4} and eps["delta"] == 1e-5 and eps["unit"] == "image"
    assert eps["final_max"] == 1.5 and eps["level"] == "sample"
    json.dumps(head, allow_nan=False)  # plain JSON


def test_the_run_headline_without_dp_has_no_epsilon(tmp_path: Path) -> None:
    run = make_run(tmp_path, epsilon=False)
    head = run_headline(summary=json.loads((run / "summary.json").read_text()), run_dir=run)
    assert head["epsilon"] is None and head["final"]["accuracy"] == 0.6123


@pytest.mark.parametrize("command", ["simulate", "deploy-local", "evaluate", "export", "audit", "partition",
                                     "report", "predict", "config", "models"])
def test_every_result_command_takes_json(command: str) -> None:
    from simulation.commands.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert "--json" in sub.choices[command].format_help()
