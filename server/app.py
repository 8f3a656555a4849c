"""The ServerApp: run the strategy, evaluate the global model each round, keep the run record."""

from __future__ import annotations

import logging

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fer_models.config import RunConfig
from fer_models.task import build_model, load_store
from server.grid import RecordingGrid
from server.recorder import RunRecorder
from server.strategy import make_strategy

logger = logging.getLogger(__name__)

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Federate ``num-server-rounds`` rounds; every round is evaluated, recorded and checkpointed."""
    cfg = RunConfig.from_flat(context.run_config, source="run config")
    store = load_store(cfg)
    logger.info("dataset %s", store.describe())
    recorder = RunRecorder(cfg=cfg, store=store)
    model = build_model(cfg, image_size=store.image_size[0])
    recording_grid = RecordingGrid(grid)
    strategy = make_strategy(cfg)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        metrics = recorder.on_round(server_round=server_round, state_dict=arrays.to_torch_state_dict(),
                                    replies=recording_grid.last_train)
        return MetricRecord(metrics)

    result = strategy.start(grid=recording_grid, initial_arrays=ArrayRecord(model.state_dict()),  # type: ignore[arg-type]
                            num_rounds=cfg.num_server_rounds, train_config=ConfigRecord(),
                            evaluate_fn=evaluate_fn)
    recorder.finish(client_eval=result.evaluate_metrics_clientapp)
