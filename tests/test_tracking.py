"""Live tracking (tracking=tensorboard|mlflow|all, server/tracking.py), read back by TensorBoard's own event reader
and MLflow's own client; the 4-round simulation's tracking is checked in tests/engine/test_simulation_e2e.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fer_models.config import ConfigError, RunConfig
from server import tracking
from server.tracking import Tracker, confusion_image

ROWS = [{"round": r, "accuracy": 0.2 * r, "loss": 2.0 - 0.3 * r, "macro_f1": 0.1 * r, "epsilon_max": 1.5 * r,
         "clients_sampled": 2} for r in (1, 2)]
PER_CLIENT = [{"0": 1.4, "1": 1.5}, {"0": 2.9, "1": 3.0}]
FINAL = {"accuracy": 0.4, "n": 70, "split": "test", "confusion_matrix": (np.eye(7, dtype=int) * 10 + 1).tolist()}


def _track(tmp_path: Path, **settings: str) -> RunConfig:
    cfg = RunConfig.from_flat({"run-name": "tracked", **settings})
    tracker = Tracker(cfg=cfg, run_dir=tmp_path)
    for row, eps in zip(ROWS, PER_CLIENT):
        tracker.round(row, per_client=eps, unit="sample")
    tracker.finish(rounds=2, final=FINAL)
    return cfg


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]} | {
        "_images": acc.Tags()["images"]}


def mlflow_run(folder: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(folder / 'mlflow.db').resolve()}")
    run_id = (folder / "mlflow-run-id").read_text().strip()
    return client, client.get_run(run_id)


def test_tensorboard_holds_every_rounds_figures_and_each_clients_epsilon(tmp_path: Path) -> None:
    _track(tmp_path, tracking="tensorboard")
    got = tensorboard_scalars(tmp_path / "tracking" / "tensorboard")
    assert got["accuracy"] == [(1, pytest.approx(0.2)), (2, pytest.approx(0.4))]
    assert [v for _, v in got["epsilon/sample-level/client_1"]] == [pytest.approx(1.5), pytest.approx(3.0)]
    assert "confusion_matrix" in got["_images"]
    assert not (tmp_path / "tracking" / "mlflow.db").exists()


def test_mlflow_holds_the_config_every_rounds_figures_and_the_confusion_matrix(tmp_path: Path) -> None:
    cfg = _track(tmp_path, tracking="mlflow")
    client, run = mlflow_run(tmp_path / "tracking")
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    assert run.data.params["num-clients"] == str(cfg.num_clients) and len(run.data.params) == len(cfg.to_flat())
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")] == \
        [(1, pytest.approx(1.7)), (2, pytest.approx(1.4))]
    assert client.get_metric_history(run.info.run_id, "epsilon.sample-level.client_0")[-1].value == pytest.approx(2.9)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"confusion_matrix.png", "final.json"}


def test_the_confusion_image_scales_each_row_to_its_largest_count() -> None:
    image = confusion_image(FINAL["confusion_matrix"])
    assert image.shape == (112, 112) and image.dtype == np.uint8
    assert image[0, 0] == 255 and image[0, 16] == round(255 / 11)  # diagonal 11, off-diagonal 1


def test_a_missing_backend_is_named_with_the_extra_to_install(monkeypatch) -> None:
    monkeypatch.setitem(tracking.NEEDS, "mlflow", "no_such_module_for_fedfer")
    with pytest.raises(ConfigError, match=r"tracking=all needs no_such_module_for_fedfer: pip install 'fedfer\[tracking\]'"):
        tracking.check_tracking(RunConfig.from_flat({"tracking": "all"}))
    tracking.check_tracking(RunConfig.from_flat({"tracking": "tensorboard"}))  # installed: no error


def test_a_failing_backend_is_dropped_and_the_run_goes_on(tmp_path: Path, caplog) -> None:
    tracker = Tracker(cfg=RunConfig.from_flat({"tracking": "tensorboard"}), run_dir=tmp_path)
    tracker.backends["tensorboard"].writer.close()
    tracker.backends["tensorboard"].round = lambda *a: (_ for _ in ()).throw(OSError("disk gone"))
    tracker.round(ROWS[0], per_client={}, unit="sample")
    assert tracker.backends == {} and "the run goes on without it" in caplog.text
    tracker.finish(rounds=1, final=FINAL)  # nothing left to call: no error
