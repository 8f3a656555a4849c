"""Shared fixtures.

Real data lives outside the project (``../shared/data`` beside the checkout, or
``$FEDFER_SHARED_DATA``). Tests that need it use the ``shared_data`` fixture: they skip when it
is absent, except when ``FEDFER_REQUIRE_REAL_DATA=1`` (set by ``.ci/run`` whenever the data is
there), where a missing dataset fails the test instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    env = os.environ.get("FEDFER_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the real-data folder (fer2013/, ckplus48/, jaffe/), or skip."""
    path = _shared_data_dir()
    if not path.is_dir():
        if os.environ.get("FEDFER_REQUIRE_REAL_DATA") == "1":
            pytest.fail(f"real data required (FEDFER_REQUIRE_REAL_DATA=1) but {path} is missing")
        pytest.skip(f"real data not found at {path}")
    return path


@pytest.fixture()
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private dataset cache folder for one test."""
    d = tmp_path / "cache"
    monkeypatch.setenv("FEDFER_CACHE", str(d))
    return d


@pytest.fixture()
def flower_identity():
    """Lets tests build Flower Messages in-process (Flower normally sets this per task)."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    yield TaskIdentity
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


@pytest.fixture()
def one_thread():
    """One intra-op thread: small CPU ops slow down badly with 2 threads on a shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def node_state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's clients keep their privacy ledgers in a folder of their own (never ~/.local/state)."""
    d = tmp_path_factory.mktemp("node-state")
    monkeypatch.setenv("FEDFER_STATE_DIR", str(d))
    return d


@pytest.fixture()
def predictable_privacy_randomness(monkeypatch: pytest.MonkeyPatch) -> None:
    """TEST-ONLY negative control: DP noise and Poisson sampling from fixed keys, i.e. what a server
    could regenerate. Every client round gets the same sources (make_private asks for two: the
    sampler's, key 0x00..., then the noise's, key 0x01...). The product has no such switch."""
    import itertools

    import fer_models.privacy.dp_sgd as privacy
    from fer_models.privacy.secure_random import KEY_BYTES, SecureRandom

    calls = itertools.count()
    monkeypatch.setattr(privacy, "secret_source", lambda: SecureRandom(key=bytes([next(calls) % 2]) * KEY_BYTES))


@pytest.fixture()
def trained(monkeypatch) -> list[int]:
    """Counts the calls of the engine's training loop (one per round actually trained): a privacy refusal must
    come before any."""
    from fer_models.training import engine

    calls: list[int] = []
    real = engine.train

    def spy(**kwargs):
        calls.append(1)
        return real(**kwargs)

    monkeypatch.setattr(engine, "train", spy)
    return calls
