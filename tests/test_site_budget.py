"""The site owns its budget: an epsilon cap over every run and lineage on the same data, a minimum noise,
a lost ledger refused before training, and error replies that carry a generic reason only.

The server draws the lineage and writes the run config (epsilon-budget, noise): the node's own
config (epsilon-cap, min-noise-multiplier, privacy-state) must hold whatever they say. Every refusal
here is checked to come before any training (a spy on the engine's training loop).
"""

from __future__ import annotations

import shutil

import pytest
from flwr.app import Context, RecordDict
from opacus.accountants import RDPAccountant

from client.site_ledger import SiteLedger
from fer_models.config import RunConfig
from fer_models.federation.sites import local_data
from fer_models.federation.task import client_data
from fer_models.federation.wire import BUDGET_EXCEEDED, CLIENT_REASONS, LEDGER_MISSING, SITE_DATA_ERROR
from tests.client_rounds import reply_epsilon, train_round
from tests.site_fixtures import write_site

pytestmark = pytest.mark.usefixtures("one_thread", "flower_identity")

# one client of 42 images, batch 16: q = 1/3, 3 steps a round; noise 1.0 gives 5.20 after one round, 6.84 after two
SMALL = {"synthetic-per-class": 12, "synthetic-eval-per-class": 4, "num-clients": 2, "batch-size": 16,
         "dp": "sample", "dp-recipe": "none", "noise-multiplier": 1.0, "max-grad-norm": 1.0, "num-server-rounds": 2,
         "min-client-samples": 4, "local-epochs": 1, "epsilon-budget": 50.0}  # the server's budget would allow far more


def _node(cfg: RunConfig, state_dir, **node: object) -> Context:
    """A SuperNode's context as after a (re)start: empty Flower state, its own state dir and node config."""
    return Context(run_id=7, node_id=1, state=RecordDict(), run_config=cfg.to_flat(),
                   node_config={"partition-id": 0, "num-partitions": cfg.num_clients, "state-dir": str(state_dir),
                                **node})


def _composed(noise: float, q: float, steps: int, delta: float = 1e-5) -> float:
    acc = RDPAccountant()
    acc.history = [(noise, q, steps)]
    return acc.get_epsilon(delta=delta)


def test_a_capped_site_refuses_the_new_lineage_that_would_take_its_data_past_the_cap(tmp_path, trained, caplog):
    cfg = RunConfig.from_flat(SMALL)
    assert len(client_data(cfg, partition_id=0, num_partitions=2)) == 42  # q = 1/3, 3 steps a round
    capped = {"epsilon-cap": 8.0, "privacy-state": "new"}
    ctx = _node(cfg, tmp_path, **capped)
    first = [reply_epsilon(train_round(ctx, r, lineage="run-A")) for r in (1, 2)]
    assert first[-1] == pytest.approx(_composed(1.0, 1 / 3, 6)) and 6 < first[-1] < 8  # lineage A spent ~6.8
    assert len(trained) == 2
    # the server starts a new run: a new lineage, a fresh lineage ledger at 0, epsilon-budget 50
    reply = train_round(_node(cfg, tmp_path, **capped), 1, lineage="run-B")
    assert reply.has_error() and reply.error.code == BUDGET_EXCEEDED
    assert len(trained) == 2  # refused before training: the engine never ran
    over = _composed(1.0, 1 / 3, 9)  # A's 6 steps and B's 3, composed as one history: 8.11
    assert f"to {over:.3f}" in caplog.text and "epsilon-cap=8" in caplog.text
    assert reply.error.reason == CLIENT_REASONS[BUDGET_EXCEEDED]
    # control: the same node without a cap trains lineage B (and its own lineage ledger starts at 0)
    assert reply_epsilon(train_round(_node(cfg, tmp_path), 1, lineage="run-B")) == pytest.approx(_composed(1.0, 1 / 3, 3))
    assert len(trained) == 3


def test_the_same_data_under_another_path_or_run_config_is_the_same_site_ledger(tmp_path, cache_dir, trained):
    site = write_site(tmp_path / "clinic", seed=1, per_class=3)
    copy = shutil.copytree(site, tmp_path / "elsewhere" / "renamed")
    other = write_site(tmp_path / "school", seed=2, per_class=3)
    cfg = RunConfig.from_flat({"client-data": "site", "num-clients": 3, "dp": "sample", "dp-recipe": "none",
                               "noise-multiplier": 1.0, "batch-size": 8, "num-server-rounds": 1,
                               "local-epochs": 1, "eval-data-path": str(other)})
    state = tmp_path / "state"

    def ledger(path, name, run=cfg):
        node = {"data-path": str(path), "site": name, "state-dir": str(state)}
        ctx = Context(run_id=1, node_id=1, state=RecordDict(), run_config=run.to_flat(), node_config=node)
        return SiteLedger.locate(ctx, local_data(run, node))

    a, b = ledger(site, "clinic"), ledger(copy, "clinic-2")
    subset = ledger(site, "clinic", cfg.replace(max_train_samples=5))  # the server trains a subset of it
    assert a.path == b.path == subset.path and a.identity == b.identity
    assert ledger(other, "school").identity != a.identity  # control: other images, another ledger
    # a lineage spent on the first path is counted when the data is reached through the copy
    node = {"data-path": str(site), "site": "clinic", "state-dir": str(state), "epsilon-cap": 6.0,
            "privacy-state": "new"}
    assert reply_epsilon(train_round(Context(run_id=1, node_id=1, state=RecordDict(), run_config=cfg.to_flat(),
                               node_config=node), 1, lineage="L1")) > 0
    assert list(b.entries()) == ["L1--site-clinic"]
    again = {**node, "data-path": str(copy), "site": "clinic-2"}
    reply = train_round(Context(run_id=2, node_id=1, state=RecordDict(), run_config=cfg.to_flat(), node_config=again), 1,
                   lineage="L2")
    assert reply.has_error() and reply.error.code == BUDGET_EXCEEDED and len(trained) == 1


def test_a_capped_node_whose_state_folder_was_deleted_refuses_before_any_training(tmp_path, trained, caplog):
    cfg = RunConfig.from_flat(SMALL)
    state = tmp_path / "node-state"
    never = train_round(_node(cfg, state, **{"epsilon-cap": 8.0}), 1, lineage="L1")  # a capped node's first start
    assert never.has_error() and never.error.code == LEDGER_MISSING and "privacy-state=new" in caplog.text
    ctx = _node(cfg, state, **{"epsilon-cap": 8.0, "privacy-state": "new"})  # started explicitly
    reply_epsilon(train_round(ctx, 1, lineage="L1"))
    assert len(trained) == 1
    shutil.rmtree(state)  # the whole folder: lineage ledger, markers, site ledger
    caplog.clear()
    restarted = train_round(_node(cfg, state, **{"epsilon-cap": 8.0}), 2, lineage="L1")
    assert restarted.has_error() and restarted.error.code == LEDGER_MISSING
    assert f"restore {state}" in caplog.text and str(state) not in restarted.error.reason
    running = train_round(ctx, 2, lineage="L1")  # the same SuperNode, still running: its Flower state remembers
    assert running.has_error() and running.error.code == LEDGER_MISSING
    assert len(trained) == 1  # neither trained
    assert not (state / "ledgers").exists()  # and nothing was started afresh


def test_a_lost_site_ledger_is_refused_even_when_the_lineage_ledger_is_still_there(tmp_path, trained):
    cfg = RunConfig.from_flat(SMALL)
    reply_epsilon(train_round(_node(cfg, tmp_path), 1, lineage="L1"))
    for site_file in (tmp_path / "sites").glob("*.json"):
        site_file.unlink()
    reply = train_round(_node(cfg, tmp_path), 2, lineage="L1")
    assert reply.has_error() and reply.error.code == LEDGER_MISSING and len(trained) == 1


def test_min_noise_multiplier_refuses_a_lower_noise_whatever_the_run_config_says(tmp_path, trained, caplog):
    low = RunConfig.from_flat({**SMALL, "noise-multiplier": 0.5})
    reply = train_round(_node(low, tmp_path / "a", **{"min-noise-multiplier": 0.8}), 1, lineage="L1")
    assert reply.has_error() and reply.error.code == BUDGET_EXCEEDED and "min-noise-multiplier=0.8" in caplog.text
    assert len(trained) == 0
    plain = RunConfig.from_flat({**SMALL, "dp": "none"})  # no noise at all: a limited node does not train
    reply = train_round(_node(plain, tmp_path / "b", **{"min-noise-multiplier": 0.8}), 1, lineage="L1")
    assert reply.has_error() and reply.error.code == BUDGET_EXCEEDED and len(trained) == 0
    ok = RunConfig.from_flat({**SMALL, "noise-multiplier": 1.0})  # control: noise at or above the minimum trains
    reply_epsilon(train_round(_node(ok, tmp_path / "c", **{"min-noise-multiplier": 0.8}), 1, lineage="L1"))
    assert len(trained) == 1


@pytest.mark.parametrize("broken", ["missing", "label"])
def test_an_error_reply_carries_a_generic_reason_without_path_or_label_text(tmp_path, cache_dir, caplog, broken):
    secret = tmp_path / "patient-records-ward-7"
    if broken == "missing":
        data_path = secret / "faces"
    else:
        site = write_site(secret / "imgs", seed=4, per_class=1)
        image = next((site / "train").rglob("*.png"))
        data_path = secret / "faces.csv"
        data_path.write_text(f"path,label\n{image},contempt-of-the-ward\n")
    cfg = RunConfig.from_flat({"client-data": "site", "num-clients": 3})
    ctx = Context(run_id=1, node_id=1, state=RecordDict(), run_config=cfg.to_flat(),
                  node_config={"data-path": str(data_path), "site": "ward"})
    reply = train_round(ctx, 1, lineage="L1")
    assert reply.has_error() and reply.error.code == SITE_DATA_ERROR
    assert reply.error.reason == CLIENT_REASONS[SITE_DATA_ERROR]
    for private in ("patient-records", "ward-7", "contempt", str(tmp_path)):
        assert private not in reply.error.reason
    assert "patient-records-ward-7" in caplog.text  # the detail is in the node's own log
    if broken == "label":
        assert "contempt-of-the-ward" in caplog.text


def test_every_generic_reason_is_fixed_text():
    """A reason is a constant per code: nothing in it can come from a site's data or settings."""
    assert all(isinstance(r, str) and "{" not in r and r for r in CLIENT_REASONS.values())
    assert len(set(CLIENT_REASONS.values())) == len(CLIENT_REASONS)
