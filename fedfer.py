"""fedfer's Python API: ``import fedfer; fedfer.simulate(...)``, ``fedfer.evaluate(...)``, ``fedfer.predict(...)``
(defined in simulation/api.py; docs/python-api.md)."""

from simulation.api import CommandFailedError, evaluate, predict, run_command, simulate

__all__ = ["CommandFailedError", "evaluate", "predict", "run_command", "simulate"]
