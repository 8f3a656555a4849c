"""Importing fedfer's models or privacy code leaves no log handler of Opacus' on the root logger (it would print
every line of a Flower app twice under `flwr run`); a control shows Opacus alone does install one."""

from __future__ import annotations

import subprocess
import sys

import pytest

COUNT = "import logging; print(len(logging.getLogger().handlers))"


@pytest.mark.parametrize("module,handlers", [("opacus.utils.module_utils", "1"),  # control: Opacus alone adds one
                                             ("fer_models.models", "0"), ("fer_models.privacy.dp_sgd", "0")])
def test_importing_fedfer_leaves_the_root_logger_without_opacus_handler(module: str, handlers: str) -> None:
    proc = subprocess.run([sys.executable, "-c", f"import {module}; {COUNT}"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == handlers
