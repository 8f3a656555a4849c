"""Run a federated experiment on one machine with Flower's simulation engine (Ray backend).

The ServerApp and ClientApp are the very apps of ``pyproject.toml``; the resolved settings reach
both as their run config, exactly as ``flwr run . --run-config`` would deliver them.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import NoReturn

from fer_models.common.atomic import AtomicWriteError
from fer_models.config import ConfigValue, RunConfig
from server.validation import RoundFailedError
from simulation.launch.processes import MARK_ENV, Terminated, marked_pids, signal_pids, signals_raise

logger = logging.getLogger(__name__)


class RunWriteError(RuntimeError):
    """The run folder could not be written during the run (a full disk, ...): the run stopped; it resumes."""


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


#: Ray settings of a local simulation. ``RAY_worker_niceness``: Ray starts its workers, the clients that train,
#: at nice 15 (its default), below every other process of the run at nice 0: Ray's own daemons, the ServerApp's
#: threads, a monitor. Each wake-up of one of them then takes a core from a training client, and with torch's
#: threads working in lock-step one preempted thread stalls them all (measured on 2 cores, issue 20: one epoch of a
#: 2-thread client at nice 15 took 8-10.6 s beside a nice-0 /proc poller, 1.1-1.3 s without it). At 0 they share fairly.
RAY_ENVIRONMENT = {"RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0", "RAY_USAGE_STATS_ENABLED": "0",
                   "RAY_worker_niceness": "0"}


def ray_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_simulation(cfg: RunConfig, *, verbose: bool = False) -> None:
    """Run ``cfg`` with ``num-clients`` virtual SuperNodes; results land in ``cfg.out_dir``.

    Unless ``verbose``, Flower's log goes to ``<out-dir>/logs/flower.log`` and Ray's worker output
    stays off the terminal (simulation/commands/console.py)."""
    import torch
    from flwr.app import Context, RecordDict
    from flwr.simulation.run_simulation import _run_simulation
    from flwr.supercore.telemetry import EventType

    for key, value in RAY_ENVIRONMENT.items():
        os.environ.setdefault(key, value)  # the caller's own setting wins

    backend = {
        "client_resources": {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
        "init_args": {"num_cpus": ray_cpus(), "num_gpus": torch.cuda.device_count(),
                      "include_dashboard": False, "log_to_driver": verbose},
    }
    if os.environ.get("RAY_ADDRESS"):  # attach to a running Ray cluster; its nodes bring their own CPUs/GPUs
        backend["init_args"] = {"address": os.environ["RAY_ADDRESS"], "log_to_driver": verbose}
        logger.info("attaching to the Ray cluster at RAY_ADDRESS=%s", os.environ["RAY_ADDRESS"])
    # every process the engine starts (Ray's daemons and workers) inherits this mark: an interruption stops them all
    mark = f"simulate-{uuid.uuid4().hex}"
    os.environ[MARK_ENV] = mark
    with tempfile.TemporaryDirectory(prefix="fedfer-app-") as tmp:
        app_dir = write_app_dir(cfg, Path(tmp))
        context = Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config=cfg.to_flat())
        logger.info("starting Flower simulation: %d clients, %d rounds (engine start-up takes a while)",
                    cfg.num_clients, cfg.num_server_rounds)
        try:
            with signals_raise():
                _run_simulation(num_supernodes=cfg.num_clients,
                                exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
                                server_app_attr="server.app:app", client_app_attr="client.app:app",
                                backend_name="ray", backend_config=backend, app_dir=str(app_dir),
                                server_app_context=context, is_app=True)
        except RoundFailedError:
            pass  # the ServerApp recorded why in the run folder; the caller reports it
        except AtomicWriteError as exc:  # raised in the ServerApp's thread, re-raised here by Flower
            raise RunWriteError(write_failure_message(exc, run_dir=Path(cfg.out_dir))) from None
        except KeyboardInterrupt:
            _stop_and_exit(mark=mark, code=130, cfg=cfg, app_dir=Path(tmp))
        except Terminated:
            _stop_and_exit(mark=mark, code=143, cfg=cfg, app_dir=Path(tmp))
        except SystemExit as exc:
            if exc.code != signal.SIGTERM:  # ray.init replaces our SIGTERM handler with sys.exit(signum)
                raise
            _stop_and_exit(mark=mark, code=143, cfg=cfg, app_dir=Path(tmp))
        finally:
            os.environ.pop(MARK_ENV, None)


def write_failure_message(exc: AtomicWriteError, *, run_dir: Path) -> str:
    """One line: the file, the space left, what is kept and how to continue."""
    from server.checkpoint import CheckpointError, load_checkpoint

    todo = "free some space" if exc.disk_full else "fix that"
    try:
        done = int(load_checkpoint(run_dir)["round"])
    except CheckpointError:
        return f"{exc}; the run stopped before completing a round: {todo}, then run it again"
    return (f"{exc}; the run stopped (checkpoint.pt and model.pt keep round {done}): {todo}, then continue with "
            f"`fedfer simulate --resume {run_dir}`")


def _stop_and_exit(*, mark: str, code: int, cfg: RunConfig, app_dir: Path, grace: float = 3.0) -> NoReturn:
    """Stop every process the engine started, then leave at once.

    The ServerApp runs in a Flower thread that never learns of the interruption and would keep the
    interpreter alive: ``os._exit`` ends it. Checkpoints are written atomically, so the last
    completed round stays resumable.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the clean-up
    logger.warning("interrupted: stopping the simulation engine and its processes")
    signal_pids(marked_pids(mark), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while marked_pids(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    signal_pids(marked_pids(mark), signal.SIGKILL)
    shutil.rmtree(app_dir, ignore_errors=True)
    logger.warning("interrupted; the rounds completed so far are saved: continue with "
                   "`fedfer simulate --resume %s`", cfg.out_dir or "<run folder>")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
