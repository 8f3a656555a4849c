"""Run a federated experiment on one machine with Flower's simulation engine (Ray backend).

The ServerApp and ClientApp are the very apps of ``pyproject.toml``; the resolved settings reach
both as their run config, exactly as ``flwr run . --run-config`` would deliver them.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from fer_models.config import ConfigValue, RunConfig

logger = logging.getLogger(__name__)


def _toml_value(value: ConfigValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def write_app_dir(cfg: RunConfig, directory: Path) -> Path:
    """A minimal Flower app folder whose ``[tool.flwr.app.config]`` is the resolved config."""
    lines = ["[project]", 'name = "fedfer-simulation"', 'version = "0.1.0"', "dependencies = []", "",
             "[tool.flwr.app]", 'publisher = "fedfer"', "", "[tool.flwr.app.components]",
             'serverapp = "server.app:app"', 'clientapp = "client.app:app"', "", "[tool.flwr.app.config]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in cfg.to_flat().items()]
    (directory / "pyproject.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def ray_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_simulation(cfg: RunConfig) -> None:
    """Run ``cfg`` with ``num-clients`` virtual SuperNodes; results land in ``cfg.out_dir``."""
    from flwr.app import Context, RecordDict
    from flwr.supercore.telemetry import EventType
    from flwr.simulation.run_simulation import _run_simulation

    import torch

    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    backend = {
        "client_resources": {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
        "init_args": {"num_cpus": ray_cpus(), "num_gpus": torch.cuda.device_count(),
                      "include_dashboard": False},
    }
    if os.environ.get("RAY_ADDRESS"):  # attach to a running Ray cluster; its nodes bring their own CPUs/GPUs
        backend["init_args"] = {"address": os.environ["RAY_ADDRESS"]}
        logger.info("attaching to the Ray cluster at RAY_ADDRESS=%s", os.environ["RAY_ADDRESS"])
    with tempfile.TemporaryDirectory(prefix="fedfer-app-") as tmp:
        app_dir = write_app_dir(cfg, Path(tmp))
        context = Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config=cfg.to_flat())
        logger.info("starting Flower simulation: %d clients, %d rounds (engine start-up takes a while)",
                    cfg.num_clients, cfg.num_server_rounds)
        _run_simulation(num_supernodes=cfg.num_clients, exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
                        server_app_attr="server.app:app", client_app_attr="client.app:app",
                        backend_name="ray", backend_config=backend, app_dir=str(app_dir),
                        server_app_context=context, is_app=True)
