"""Live tracking of a run, opt-in (``tracking=tensorboard|mlflow|all``): what the server records, as it records it.

Per round: accuracy, loss, macro-F1 (and validation, client-evaluation and training figures when the round has
them), the largest epsilon and each client's epsilon (named ``epsilon/<unit>-level/client_<id>``, with the unit
and delta in the run's parameters). At the start: the resolved run config (MLflow parameters; TensorBoard text).
At the end: the final figures and the confusion matrix as an image (rows true, columns predicted, each row
scaled to its largest count). Nothing here is new information for the server: it is the record of
``metrics.jsonl`` and ``summary.json`` in the formats people follow runs with.

- TensorBoard: event files under ``<run folder>/tracking/tensorboard`` (``tensorboard --logdir`` there).
- MLflow: ``tracking-uri`` (empty: an SQLite store ``<run folder>/tracking/mlflow.db`` with its artifacts beside
  it; ``mlflow ui --backend-store-uri sqlite:///...``), experiment ``fedfer``, one MLflow run per fedfer run (a
  resumed run continues its MLflow run: its id is kept in ``tracking/mlflow-run-id``).

Both need the ``tracking`` extra (``pip install 'fedfer[tracking]'``); :func:`check_tracking` says so before a
run starts.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from fer_models.config import ConfigError, RunConfig
from fer_models.federation.run_folder import CONFUSION_FIGURE

logger = logging.getLogger(__name__)

#: tracking setting -> the backends it turns on
BACKENDS = {"none": (), "tensorboard": ("tensorboard",), "mlflow": ("mlflow",), "all": ("tensorboard", "mlflow")}
#: backend -> the module it needs
NEEDS = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
TRACKING_DIR = "tracking"
#: the per-round scalars tracked when a round has them
ROUND_KEYS = ("accuracy", "loss", "macro_f1", "weighted_f1", "val_accuracy", "val_loss", "train_loss",
              "train_accuracy", "client_eval_accuracy", "client_eval_loss", "group_gap", "epsilon_max")


def check_tracking(cfg: RunConfig) -> None:
    """Raise ConfigError, naming the package and the extra, when a chosen backend is not installed."""
    missing = [NEEDS[b] for b in BACKENDS[cfg.tracking] if importlib.util.find_spec(NEEDS[b]) is None]
    if missing:
        raise ConfigError(f"tracking={cfg.tracking} needs {', '.join(missing)}: pip install 'fedfer[tracking]' "
                          f"(or set tracking=none)")


def confusion_image(matrix: Any) -> np.ndarray:
    """A ``(7 * 16, 7 * 16)`` uint8 image of a confusion matrix, each row scaled to its largest count."""
    counts = np.asarray(matrix, dtype=np.float64)
    scaled = counts / np.maximum(counts.max(axis=1, keepdims=True), 1.0)
    return np.kron((scaled * 255).round().astype(np.uint8), np.ones((16, 16), dtype=np.uint8))


def _round_scalars(row: Mapping[str, Any], *, per_client: Mapping[str, float], unit: str) -> dict[str, float]:
    out = {k: float(row[k]) for k in ROUND_KEYS if isinstance(row.get(k), (int, float))}
    if "epsilon_max" in out:
        out.update({f"epsilon/{unit}-level/client_{c}": float(e) for c, e in per_client.items()})
    return out


class _TensorBoard:
    def __init__(self, folder: Path, cfg: RunConfig) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder / "tensorboard"))
        table = "\n".join(f"| {k} | {v} |" for k, v in cfg.to_flat().items())
        self.writer.add_text("config", "| setting | value |\n|---|---|\n" + table, global_step=0)

    def round(self, step: int, scalars: Mapping[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def finish(self, step: int, final: Mapping[str, Any]) -> None:
        if "confusion_matrix" in final:
            self.writer.add_image("confusion_matrix", confusion_image(final["confusion_matrix"]), global_step=step,
                                  dataformats="HW")
        self.writer.flush()
        self.writer.close()


class _MLflow:
    def __init__(self, folder: Path, cfg: RunConfig, *, resumed: bool) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = cfg.tracking_uri or f"sqlite:///{(folder / 'mlflow.db').resolve()}"
        self.client = MlflowClient(tracking_uri=uri)
        id_file = folder / "mlflow-run-id"
        if resumed and id_file.is_file():
            self.run_id = id_file.read_text().strip()
            return
        exp = self.client.get_experiment_by_name("fedfer")
        exp_id = exp.experiment_id if exp else self.client.create_experiment(
            "fedfer", artifact_location=None if cfg.tracking_uri else str((folder / "mlflow-artifacts").resolve()))
        self.run_id = self.client.create_run(exp_id, run_name=cfg.run_name).info.run_id
        id_file.write_text(self.run_id + "\n")
        params = [Param(k, str(v)[:6000]) for k, v in cfg.to_flat().items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def round(self, step: int, scalars: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k.replace("/", "."), v, now, step)
                                                    for k, v in scalars.items()])

    def finish(self, step: int, final: Mapping[str, Any]) -> None:
        if "confusion_matrix" in final:
            self.client.log_image(self.run_id, confusion_image(final["confusion_matrix"]), CONFUSION_FIGURE)
        self.client.log_dict(self.run_id, {k: v for k, v in final.items() if k != "confusion_matrix"}, "final.json")
        self.client.set_terminated(self.run_id)


class Tracker:
    """The chosen backends, fed by :class:`server.recorder.RunRecorder`; a tracker of ``tracking=none`` does
    nothing. A backend that fails while the run goes on is logged once and dropped: tracking never stops a run."""

    def __init__(self, *, cfg: RunConfig, run_dir: Path) -> None:
        self.backends: dict[str, Any] = {}
        names = BACKENDS[cfg.tracking]
        if not names:
            return
        check_tracking(cfg)
        folder = run_dir / TRACKING_DIR
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            self.backends[name] = (_TensorBoard(folder, cfg) if name == "tensorboard"
                                   else _MLflow(folder, cfg, resumed=bool(cfg.resume_from)))
        logger.info("tracking %s in %s", " and ".join(names), folder)

    def _each(self, method: str, *args: Any) -> None:
        for name, backend in list(self.backends.items()):
            try:
                getattr(backend, method)(*args)
            except Exception as exc:  # noqa: BLE001  (a tracking failure must not end a training run)
                logger.warning("tracking with %s failed (%s: %s); the run goes on without it", name,
                               type(exc).__name__, exc)
                del self.backends[name]

    def round(self, row: Mapping[str, Any], *, per_client: Mapping[str, float], unit: str) -> None:
        self._each("round", int(row["round"]), _round_scalars(row, per_client=per_client, unit=unit))

    def finish(self, *, rounds: int, final: Mapping[str, Any]) -> None:
        self._each("finish", rounds, final)
