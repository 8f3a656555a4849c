"""The run report: rounds.csv, plots and report.md written from a run folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_models.common.labels import EMOTIONS
from simulation.reports.report import ReportError, plot_attention_grid, plot_partition_heatmap, write_report

PLOTS = ("accuracy_loss.png", "epsilon.png", "confusion_matrix.png", "per_class.png")


def _rows(n: int = 3) -> list[dict]:
    rows = []
    for r in range(1, n + 1):
        rows.append({"round": r, "accuracy": 0.2 * r, "loss": 2.0 - 0.3 * r, "macro_f1": 0.15 * r,
                     "weighted_f1": 0.18 * r, "val_accuracy": 0.21 * r, "val_loss": 2.0 - 0.25 * r,
                     "clients_sampled": 4, "clients_responded": 4, "clients_failed": 0, "elapsed_s": 3.0 * r,
                     "train_loss": 1.9 - 0.2 * r, "train_accuracy": 0.19 * r, "epsilon_max": 0.5 * r})
    rows[1]["clients_failed"] = 1
    rows[1]["errors"] = ["client 3 refused: budget"]
    return rows


def _final() -> dict:
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 20, size=(7, 7)) + np.diag(np.full(7, 40))
    per_class = {e: {"precision": 0.5 + 0.05 * i, "recall": 0.6 - 0.05 * i, "f1": 0.55, "support": int(cm[i].sum())}
                 for i, e in enumerate(EMOTIONS)}
    return {"accuracy": 0.6123, "loss": 1.1, "macro_f1": 0.5511, "weighted_f1": 0.5822, "macro_precision": 0.6,
            "macro_recall": 0.55, "per_class": per_class, "confusion_matrix": cm.tolist(), "n": int(cm.sum()),
            "split": "test"}


def make_run(root: Path, *, synthetic: bool = True, epsilon: bool = True, summary: bool = True) -> Path:
    run = root / "run"
    run.mkdir(parents=True)
    rows = _rows()
    config = {"run-name": "fake", "model": "cnn", "num-clients": 4, "num-server-rounds": 3, "strategy": "fedavg",
              "partition": "iid", "dp": "sample" if epsilon else "none", "noise-multiplier": 1.1,
              "data-path": "" if synthetic else "/data/fer2013.csv", "data-format": "auto"}
    (run / "config.json").write_text(json.dumps(config))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if summary:
        data = {"dataset": {"name": "synthetic" if synthetic else "fer2013", "source": "gen", "synthetic": synthetic,
                            "report_split": "test", "sizes": {"val": 420, "test": 420}},
                "config": config, "initial": {"accuracy": 0.14, "loss": 1.95, "val_accuracy": 0.14, "val_loss": 1.95},
                "rounds": rows, "final": _final(), "model": {"name": "cnn", "options": {}, "path": "model.pt"},
                "seconds": 12.5}
        if epsilon:
            data["epsilon"] = {"level": "sample", "delta": 1e-5, "per_round_max": [0.5, 1.0, 1.5],
                               "final_max": 1.5, "per_client": {"0": 1.5, "1": 1.4}, "budget": 2.0}
        (run / "summary.json").write_text(json.dumps(data))
    return run


def test_rounds_csv_has_one_row_per_round_with_scalar_columns(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    write_report(run_dir=run)
    with (run / "rounds.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["round"]) for r in rows] == [1, 2, 3]
    assert float(rows[2]["accuracy"]) == pytest.approx(0.6)
    assert float(rows[2]["epsilon_max"]) == pytest.approx(1.5)
    assert "errors" not in rows[0]


def test_report_md_states_final_metrics_epsilon_and_links_images(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    write_report(run_dir=run)
    text = (run / "report.md").read_text()
    assert "0.6123" in text and "0.5511" in text and "0.5822" in text
    assert "1.500" in text  # final epsilon
    for name in PLOTS:
        assert f"]({name})" in text
    for emotion in EMOTIONS:
        assert f"| {emotion} |" in text


def test_every_plot_is_a_png_larger_than_5kb(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    written = write_report(run_dir=run)
    for name in PLOTS:
        path = run / name
        assert path in written
        assert path.stat().st_size > 5_000
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 300


def test_synthetic_runs_carry_a_loud_note_and_real_runs_do_not(tmp_path: Path) -> None:
    synthetic = make_run(tmp_path / "a")
    real = make_run(tmp_path / "b", synthetic=False)
    write_report(run_dir=synthetic)
    write_report(run_dir=real)
    assert "SYNTHETIC DATA" in (synthetic / "report.md").read_text()
    assert "SYNTHETIC" not in (real / "report.md").read_text()


def test_no_epsilon_plot_without_privacy(tmp_path: Path) -> None:
    run = make_run(tmp_path, epsilon=False)
    (run / "metrics.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "epsilon_max"}) + "\n"
                                               for r in _rows()))
    write_report(run_dir=run)
    assert not (run / "epsilon.png").exists()
    assert "epsilon.png" not in (run / "report.md").read_text()


def test_interrupted_run_without_summary_is_reported_as_unfinished(tmp_path: Path) -> None:
    run = make_run(tmp_path, summary=False)
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write('{"round": 4, "accur')  # a write cut short by a crash
    written = {p.name for p in write_report(run_dir=run)}
    assert {"rounds.csv", "accuracy_loss.png", "epsilon.png", "report.md"} <= written
    assert "confusion_matrix.png" not in written
    assert "UNFINISHED" in (run / "report.md").read_text()


def test_folder_without_results_raises_report_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="neither summary.json nor metrics.jsonl"):
        write_report(run_dir=tmp_path)


def test_report_command_writes_files_and_fails_cleanly_on_empty_folder(tmp_path: Path, capsys) -> None:
    from simulation.commands.cli import main

    run = make_run(tmp_path)
    assert main(["report", str(run)]) == 0
    assert "report.md" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert str(empty) in capsys.readouterr().err


def test_partition_and_attention_figures_are_drawn_and_embedded(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    rng = np.random.default_rng(1)
    plot_partition_heatmap(histogram=rng.integers(0, 50, size=(5, 7)), groups=["a", "a", "b", "b", "c"],
                           path=run / "partition.png")
    maps = rng.random((4, 48, 48))
    plot_attention_grid(images=rng.integers(0, 256, size=(4, 48, 48), dtype=np.uint8), maps=maps / maps.sum(),
                        labels=[0, 3, 5, 6], predictions=[0, 4, 5, "neutral"], path=run / "attention.png")
    for name in ("partition.png", "attention.png"):
        assert (run / name).stat().st_size > 5_000
    write_report(run_dir=run)
    text = (run / "report.md").read_text()
    assert "](partition.png)" in text and "](attention.png)" in text


def test_partition_heatmap_rejects_a_histogram_without_7_classes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="clients, 7"):
        plot_partition_heatmap(histogram=np.ones((3, 5)), groups=None, path=tmp_path / "p.png")
    with pytest.raises(ValueError, match="one per client"):
        plot_partition_heatmap(histogram=np.ones((3, 7)), groups=["a"], path=tmp_path / "p.png")


@pytest.mark.parametrize("local, shown, value", [
    ({"local-epochs": 3, "local-steps": 0, "local-epoch-fraction": 0.0}, "local-epochs", "3"),
    ({"local-epochs": 3, "local-steps": 15, "local-epoch-fraction": 0.0}, "local-steps", "15"),
    ({"local-epochs": 3, "local-steps": 0, "local-epoch-fraction": 0.33333}, "local-epoch-fraction", "0.33333"),
])
def test_the_settings_table_shows_the_key_that_sized_the_local_work(tmp_path: Path, local, shown, value) -> None:
    run = make_run(tmp_path, epsilon=False)
    for name in ("config.json", "summary.json"):
        data = json.loads((run / name).read_text())
        (data if name == "config.json" else data["config"]).update(local)
        (run / name).write_text(json.dumps(data))
    write_report(run_dir=run)
    rows = [line for line in (run / "report.md").read_text().splitlines() if line.startswith("| local-")]
    assert rows == [f"| {shown} | {value} |"]  # local-epochs = 3 did not run when another key sized the work


def test_the_privacy_section_says_dp_client_trusts_the_server_to_add_the_noise(tmp_path: Path) -> None:
    """dp=client's epsilon does not hold against the server, which adds the noise: report.md says so; dp=sample's
    does, and its report says that instead."""
    central, local = make_run(tmp_path / "client"), make_run(tmp_path / "sample")
    summary = json.loads((central / "summary.json").read_text())
    summary["epsilon"] = {"level": "client", "unit": "site", "delta": 1e-5, "per_round_max": [0.4, 0.8, 1.2],
                          "final_max": 1.2, "label": "site-level, delta=1e-05, the federation's (every site)"}
    (central / "summary.json").write_text(json.dumps(summary))
    write_report(run_dir=central)
    write_report(run_dir=local)
    privacy = (central / "report.md").read_text().split("## Privacy", 1)[1].split("## Figures", 1)[0]
    assert "dp=client: epsilon **1.200** (site-level" in privacy
    assert ("Against whom: the server is trusted to add the noise: this epsilon holds against the other sites and "
            "whoever receives the model, NOT against the server, which sees the clipped updates before their noise; "
            "secure-aggregation=secaggplus limits what it sees to their sum.") in privacy
    sample = (local / "report.md").read_text()
    assert "Against whom: each client adds its own noise on its own node: this epsilon holds against the server" \
        in sample and "trusted to add the noise" not in sample
