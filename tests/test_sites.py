"""client-data=site: each client trains on its own site's folder; the server evaluates through the sites."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

import server.evaluation as server_evaluation
from client.app import evaluate
from fer_models.config import ConfigError, RunConfig
from fer_models.federation.federated_eval import federated_report, held_out_counts
from fer_models.federation.sites import SiteDataError, SiteSpec, local_data, simulated_site_config
from fer_models.federation.task import clips_for
from fer_models.federation.wire import (
    CLIENT_REASONS,
    EVALUATE_COUNTS,
    EVALUATION_NOT_SHARED,
    PRIVATE_EVALUATION_REFUSED,
    SITE_DATA_ERROR,
)
from fer_models.models.from_config import build_model
from fer_models.training import engine
from fer_models.training.metrics import classification_report
from server.federated_evaluation import FederatedEvaluator
from tests.site_fixtures import count_images, write_manifest_site, write_site

BASE = {"client-data": "site", "eval-batch-size": 16}


@pytest.fixture()
def sites(tmp_path: Path, cache_dir: Path) -> dict[str, Path]:
    return {"clinic": write_site(tmp_path / "clinic", seed=1),
            "school": write_site(tmp_path / "school", seed=2, per_class=4, classes=(0, 3, 4, 6)),
            "lab": write_site(tmp_path / "lab", seed=3, per_class=3),
            "home": write_manifest_site(tmp_path / "home", seed=5)}


def _cfg(sites: dict[str, Path], **extra: object) -> RunConfig:
    return RunConfig.from_flat({**BASE, "num-clients": len(sites),
                                "data-path": ",".join(f"{n}={p}" for n, p in sites.items()), **extra})


def test_a_site_trains_on_the_training_split_of_its_own_folder_whole(sites):
    cfg = RunConfig.from_flat({**BASE, "num-clients": 3})  # a deployment: the run config names no data
    local = local_data(cfg, {"data-path": str(sites["clinic"]), "site": "clinic"})
    assert len(local.train) == count_images(sites["clinic"], "train")
    assert local.key == "site-clinic" and local.held_out == "test"
    school = local_data(cfg, {"data-path": str(sites["school"])})  # the site name defaults to the folder's
    assert school.name == "site school" and set(school.train.labels.tolist()) == {0, 3, 4, 6}  # classes missing: fine


def test_a_simulated_site_gets_the_node_config_a_deployed_site_has(sites):
    cfg = _cfg(sites)
    node = simulated_site_config(cfg, partition_id=1)
    assert node == SiteSpec(name="school", data_path=str(sites["school"]), share_evaluation=True).node_config()
    virtual = local_data(cfg, {"partition-id": 1, "num-partitions": 3})
    deployed = local_data(cfg.replace(data_path=""), node)
    assert torch.equal(virtual.train.frames, deployed.train.frames) and virtual.key == deployed.key


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "nowhere", r"site bad: data-path .*nowhere does not exist on this SuperNode"),
    (lambda root: (root / "empty").mkdir() or root / "empty", r"site bad: .*has neither a train/ nor a test/"),
    (lambda root: _manifest(root, "contempt"), r"site bad: .*faces\.csv line 2: label 'contempt' is not an emotion"),
])
def test_a_site_whose_data_cannot_be_used_stops_with_the_file_and_the_reason(tmp_path, cache_dir, make, message):
    cfg = RunConfig.from_flat({**BASE})
    with pytest.raises(SiteDataError, match=message):
        local_data(cfg, {"data-path": str(make(tmp_path)), "site": "bad"})


def _manifest(root: Path, label: str) -> Path:
    site = write_site(root / "imgs", seed=4, per_class=1)
    image = next((site / "train").rglob("*.png"))
    (root / "faces.csv").write_text(f"path,label\n{image},{label}\n")
    return root / "faces.csv"


def test_site_settings_that_mean_nothing_for_sites_are_refused():
    with pytest.raises(ConfigError, match="partition=dirichlet splits one dataset"):
        RunConfig.from_flat({**BASE, "partition": "dirichlet"})
    with pytest.raises(ConfigError, match="needs eval-data-path"):
        RunConfig.from_flat({**BASE, "dp": "sample", "target-epsilon": 8.0})
    with pytest.raises(ConfigError, match="lists the sites as name=path"):
        RunConfig.from_flat({**BASE, "data-path": "/data/fer2013"})


_STATES: dict[str, dict[str, torch.Tensor]] = {}


def _trained_state(cfg: RunConfig) -> dict[str, torch.Tensor]:
    """A model trained a little on synthetic faces: it answers several classes (a fresh one answers one)."""
    if "state" not in _STATES:
        from fer_models.data import generate_synthetic
        from fer_models.data.samples import static_clips

        store = generate_synthetic(seed=9, per_class=10, eval_per_class=1)
        data = static_clips(store, store.indices("train"), clip_length=1)
        model = build_model(cfg)
        engine.train(model=model, data=data, optimizer=torch.optim.Adam(model.parameters(), lr=3e-3),
                     loader=engine.index_loader(len(data), batch_size=16, seed=0), epochs=4,
                     device=torch.device("cpu"))
        _STATES["state"] = model.state_dict()
    return _STATES["state"]


def test_federated_evaluation_equals_centralized_evaluation_on_the_union_of_held_out_splits(sites):
    cfg = _cfg(sites)
    state = _trained_state(cfg)
    locals_ = {n: local_data(cfg, {"partition-id": i}) for i, n in enumerate(sites)}
    report = federated_report({n: held_out_counts(cfg=cfg, local=site, global_state=state) for n, site in locals_.items()})
    # independently: every held-out image of every site through one model, pooled, scored by sklearn
    model = build_model(cfg)
    model.load_state_dict(state)
    y_true, y_pred, losses = [], [], []
    for local in locals_.values():
        res = engine.evaluate(model=model, data=clips_for(cfg, local.store, local.store.indices("test")),
                              batch_size=7, device=torch.device("cpu"))
        y_true.append(res.y_true), y_pred.append(res.y_pred), losses.append(res.loss * res.num_examples)
    pooled = classification_report(y_true=np.concatenate(y_true), y_pred=np.concatenate(y_pred))
    assert len(set(np.concatenate(y_pred).tolist())) > 1, "the check needs a model that answers several classes"
    assert report["confusion_matrix"] == pooled["confusion_matrix"]
    for key in ("accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall", "n"):
        assert report[key] == pytest.approx(pooled[key])
    for name, scores in pooled["per_class"].items():
        assert report["per_class"][name] == pytest.approx(scores)
    assert report["loss"] == pytest.approx(sum(losses) / pooled["n"], rel=1e-5)
    site_acc = {n: float((t == p).mean()) for n, t, p in zip(sites, y_true, y_pred)}
    assert {n: g["accuracy"] for n, g in report["groups"].items()} == pytest.approx(site_acc)
    assert report["group_gap"] == pytest.approx(max(site_acc.values()) - min(site_acc.values()))


class _SitesGrid:
    """A Grid whose nodes are ClientApp evaluate handlers of the given node configs (in this process)."""

    def __init__(self, cfg: RunConfig, nodes: dict[int, dict]) -> None:
        self.cfg, self.nodes = cfg, nodes

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        out = []
        for msg in messages:
            ctx = Context(run_id=1, node_id=msg.metadata.dst_node_id, state=RecordDict(),
                          run_config=self.cfg.to_flat(), node_config=self.nodes[msg.metadata.dst_node_id])
            out.append(evaluate(msg, ctx))
        return out


def test_a_server_without_data_evaluates_through_the_sites_and_never_loads_a_dataset(sites, monkeypatch,
                                                                                   flower_identity, caplog):
    cfg = RunConfig.from_flat({**BASE, "num-clients": 4, "min-train-clients": 2})  # no data-path anywhere
    nodes = {10 + i: {"data-path": str(p), "site": n, "share-evaluation": True} for i, (n, p) in enumerate(sites.items())}
    nodes[99] = {"data-path": str(sites["lab"].parent / "missing"), "site": "gone", "share-evaluation": True}

    def no_data(**kwargs):
        raise AssertionError(f"the server loaded a dataset: {kwargs}")

    monkeypatch.setattr(server_evaluation, "load_store", no_data)
    monkeypatch.setattr(server_evaluation, "load_dataset", no_data)
    evaluator = server_evaluation.make_evaluator(cfg=cfg, grid=_SitesGrid(cfg, nodes))
    assert isinstance(evaluator, FederatedEvaluator)
    report = evaluator(_trained_state(cfg))
    assert set(report["groups"]) == set(sites)
    assert report["n"] == sum(count_images(p, "test") for p in sites.values())
    assert evaluator.describe()["sizes"] == {n: count_images(p, "test") for n, p in sites.items()}
    [error] = evaluator.errors  # the missing site says why, the others are evaluated
    assert error["code"] == SITE_DATA_ERROR and error["reason"] == CLIENT_REASONS[SITE_DATA_ERROR]
    assert "missing does not exist on this SuperNode" in caplog.text  # the detail: in the site's own log only
    assert str(sites["lab"].parent) not in error["reason"]


def _evaluate_counts(cfg: RunConfig, node: dict) -> Message:
    msg = Message(RecordDict({"arrays": ArrayRecord(_trained_state(cfg)), "config": ConfigRecord({EVALUATE_COUNTS: True})}),
                  dst_node_id=1, message_type="evaluate")
    return evaluate(msg, Context(run_id=1, node_id=1, state=RecordDict(), run_config=cfg.to_flat(), node_config=node))


def test_a_site_sends_counts_only_when_it_opted_in_and_never_under_dp(sites, flower_identity):
    cfg = RunConfig.from_flat({**BASE})
    node = {"data-path": str(sites["clinic"]), "site": "clinic"}
    assert _evaluate_counts(cfg, node).error.code == EVALUATION_NOT_SHARED
    assert not _evaluate_counts(cfg, {**node, "share-evaluation": True}).has_error()
    dp = RunConfig.from_flat({**BASE, "dp": "sample", "target-epsilon": 8.0, "eval-data-path": str(sites["lab"])})
    assert _evaluate_counts(dp, {**node, "share-evaluation": True}).error.code == PRIVATE_EVALUATION_REFUSED


@pytest.mark.simulation
def test_a_simulation_of_sites_runs_the_site_client_and_goes_on_without_a_broken_site(sites, tmp_path):
    """`fedfer simulate --data a=P1,... --set client-data=site`: virtual client i is site i (same client code)."""
    import json
    import os
    import subprocess
    import sys

    data = ",".join(f"{n}={p}" for n, p in {**sites, "gone": tmp_path / "missing"}.items())
    out = tmp_path / "run"
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home"), "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run([sys.executable, "-m", "simulation.commands.cli", "simulate", "--out", str(out), "--data", data,
                           *[a for kv in ("client-data=site", "num-clients=5", "min-train-clients=4",
                                          "num-server-rounds=1", "local-epochs=1") for a in ("--set", kv)]],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["groups"]) == set(sites) and summary["dataset"]["evaluation"] == "federated"
    assert summary["final"]["n"] == sum(count_images(p, "test") for p in sites.values())
    [row] = summary["rounds"]
    assert row["clients_responded"] == 4 and CLIENT_REASONS[SITE_DATA_ERROR] in row["errors"]
    assert not any(str(tmp_path) in e for e in row["errors"])  # the broken site's path stays on its node
    assert "virtual client 4: site gone" in proc.stderr + proc.stdout


def test_a_sites_list_in_an_experiment_file_gives_one_virtual_site_each(sites, tmp_path):
    from simulation.launch.experiment import ExperimentError, resolve_config

    (tmp_path / "exp.yaml").write_text("sites:\n  clinic: clinic\n  lab: lab\nnum-server-rounds: 2\n")
    cfg = resolve_config(experiment=tmp_path / "exp.yaml")
    assert (cfg.client_data, cfg.num_clients) == ("site", 2)
    assert simulated_site_config(cfg, partition_id=1)["data-path"] == str(sites["lab"].resolve())
    (tmp_path / "bad.yaml").write_text("sites: [clinic, lab]\n")
    with pytest.raises(ExperimentError, match="sites must map each site's name to its data path"):
        resolve_config(experiment=tmp_path / "bad.yaml")


def test_a_server_with_its_own_evaluation_set_evaluates_there_and_on_nothing_of_the_sites(sites, monkeypatch):
    cfg = RunConfig.from_flat({**BASE, "eval-data-path": str(sites["lab"])})
    monkeypatch.setattr(server_evaluation, "load_store", lambda *a, **k: pytest.fail("the run's data was loaded"))
    evaluator = server_evaluation.make_evaluator(cfg=cfg, grid=None)
    report = evaluator(_trained_state(cfg))
    assert report["split"] == "test" and report["n"] == count_images(sites["lab"], "test")
    assert evaluator.describe()["source"] == str(sites["lab"].resolve())
