"""Audit canaries on the client data path, and the audit end to end on a one-client run trained
in-process: with the DP noise switched off (test-only) the canary bound exceeds the accountant's
epsilon, i.e. the audit can fail; with the real noise it stays below."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from fer_models.audit.canaries import CANARY_FILE, CanaryError, canary_plan_for, plan_canaries
from fer_models.common.labels import NUM_CLASSES
from fer_models.config import RunConfig
from fer_models.federation.task import client_data, client_partitions, load_store, train_pool
from fer_models.models.from_config import build_model

SMALL = {"synthetic-per-class": 30, "synthetic-eval-per-class": 10, "max-train-samples": 70, "audit-canaries": 100,
         "seed": 3}


def test_plan_is_a_pure_function_of_its_inputs_with_wrong_labels_and_fair_coins():
    candidates, labels = np.arange(5000, 9000), np.arange(4000) % NUM_CLASSES
    plan = plan_canaries(seed=1, count=2000, candidates=candidates, labels=labels, num_clients=4)
    again = plan_canaries(seed=1, count=2000, candidates=candidates, labels=labels, num_clients=4)
    assert plan.same_as(again)
    assert not plan.same_as(plan_canaries(seed=2, count=2000, candidates=candidates, labels=labels, num_clients=4))
    assert len(np.unique(plan.image)) == 2000 and np.isin(plan.image, candidates).all()
    assert (plan.true_label == labels[plan.image - 5000]).all() and (plan.label != plan.true_label).all()
    assert abs(plan.included.mean() - 0.5) < 0.05  # 2000 fair coins: 0.05 is > 4 standard deviations
    assert set(plan.client) == {0, 1, 2, 3}
    assert sorted(np.concatenate([plan.for_client(c) for c in range(4)])) == list(np.flatnonzero(plan.included))


def test_too_many_canaries_for_the_images_outside_the_pool_are_refused_naming_the_keys():
    with pytest.raises(CanaryError, match="audit-canaries.*max-train-samples"):
        plan_canaries(seed=0, count=11, candidates=np.arange(10), labels=np.zeros(10), num_clients=2)


def test_each_client_gets_its_partition_plus_exactly_its_included_canaries(cache_dir):
    cfg = RunConfig.from_flat({**SMALL, "num-clients": 3})
    plain = cfg.replace(audit_canaries=0)
    store = load_store(cfg)
    pool = train_pool(cfg, store)
    plan = canary_plan_for(cfg=cfg, store=store, pool=pool, num_clients=3)
    assert not np.isin(plan.image, pool).any() and (store.splits[torch.from_numpy(plan.image)] == 0).all()
    for pid in range(3):
        with_canaries, without = (client_data(c, partition_id=pid, num_partitions=3) for c in (cfg, plain))
        n = len(without)
        assert torch.equal(with_canaries.frames[:n], without.frames) and torch.equal(with_canaries.labels[:n], without.labels)
        mine = plan.for_client(pid)
        assert with_canaries.frames[n:, 0].tolist() == plan.image[mine].tolist()
        assert with_canaries.labels[n:].tolist() == plan.label[mine].tolist()
    assert all(np.array_equal(a, b) for a, b in zip(client_partitions(cfg, num_partitions=3),
                                                    client_partitions(plain, num_partitions=3)))


# --- the audit end to end -----------------------------------------------------------------------

TRAINED = {**SMALL, "max-train-samples": 21, "audit-canaries": 60, "num-clients": 1, "num-server-rounds": 1,
           "dp": "sample", "dp-recipe": "none", "noise-multiplier": 30.0, "batch-size": 32, "local-epochs": 30,
           "optimizer": "sgd", "learning-rate": 0.2,
           "momentum": 0.9, "weight-decay": 0.0, "max-grad-norm": 1.0}


def _train_and_save(cfg: RunConfig, run_dir) -> float:
    """One client, one round through the ClientApp's train handler; the run folder the server would write.
    Returns the epsilon the client reported."""
    from client.app import train
    from server.ledger import ServerLedger
    from server.run_folder import save_model, write_json

    ctx = Context(run_id=time.time_ns() % 2**31, node_id=1, node_config={"partition-id": 0, "num-partitions": 1},
                  state=RecordDict(), run_config=cfg.to_flat())
    model = build_model(cfg)
    msg = Message(content=RecordDict({"arrays": ArrayRecord(model.state_dict()),
                                      "config": ConfigRecord({"server-round": 1})}), dst_node_id=1, message_type="train")
    reply = train(msg, ctx)
    assert not reply.has_error(), reply.error
    metrics = dict(reply.content["metrics"])
    ledger = ServerLedger(cfg)
    ledger.record_round(1, [metrics], [])
    run_dir.mkdir()
    save_model(run_dir / "model.pt", state_dict=reply.content["arrays"].to_torch_state_dict(), model=cfg.model,
               model_options={"activation": cfg.activation, "frontend": cfg.frontend}, config=cfg.to_flat(),
               server_round=1, image_size=48)
    write_json(run_dir / "config.json", cfg.to_flat())
    write_json(run_dir / "summary.json", {"config": cfg.to_flat(), "rounds": [{"round": 1, "accuracy": 0.0}],
                                          "epsilon": ledger.summary()})
    return float(metrics["epsilon"])


def _audit(run_dir) -> dict:
    from simulation.commands.cli import main

    assert main(["audit", str(run_dir), "--max-samples", "60"]) == 0
    return json.loads((run_dir / "audit.json").read_text())


@pytest.fixture()
def no_dp_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    """TEST-ONLY: the DP noise is zero, while the accountant still records the configured noise multiplier
    (it reads the optimizer's noise_multiplier, which is untouched). The product has no such switch."""
    from fer_models.privacy.secure_random import SecureRandom

    monkeypatch.setattr(SecureRandom, "normal",
                        lambda self, shape, *, std, device="cpu", dtype=torch.float32:
                        torch.zeros(shape, device=device, dtype=dtype))


def test_without_dp_noise_the_canary_bound_exceeds_the_reported_epsilon(
        cache_dir, tmp_path, flower_identity, one_thread, predictable_privacy_randomness, no_dp_noise):
    cfg = RunConfig.from_flat(TRAINED)
    reported = _train_and_save(cfg, tmp_path / "run")
    audit = _audit(tmp_path / "run")
    can = audit["canaries"]
    assert can["accountant_epsilon"] == pytest.approx(reported) and reported < 1.0
    assert can["epsilon_lower_bound"] > reported and not can["consistent"]
    assert can["count"] == 60 and (tmp_path / "run" / CANARY_FILE).is_file()
    assert "VIOLATION" in (tmp_path / "run" / "report.md").read_text()


def test_with_dp_noise_the_canary_bound_stays_below_the_reported_epsilon(
        cache_dir, tmp_path, flower_identity, one_thread, predictable_privacy_randomness):
    cfg = RunConfig.from_flat(TRAINED)
    reported = _train_and_save(cfg, tmp_path / "run")
    audit = _audit(tmp_path / "run")
    can = audit["canaries"]
    assert can["epsilon_lower_bound"] <= reported and can["consistent"]
    assert can["attainable_bound"] > reported  # the audit had the power to see a violation
    attacks = audit["membership"]["attacks"]
    members = len(train_pool(cfg, load_store(cfg)))  # fewer than the 60 asked for and than the 140 held out
    assert attacks["loss"]["members"] == attacks["loss"]["non_members"] == members
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Privacy audit" in report and "consistent" in report


def test_held_out_copies_of_training_images_are_not_counted_as_non_members():
    from fer_models.data import FaceStore
    from simulation.reports.audit import _not_in_training_split

    images = torch.randint(0, 256, (6, 48, 48), dtype=torch.uint8)
    images[4] = images[1]  # a test image with the pixels of a training image
    store = FaceStore(name="tiny", images=images, labels=torch.zeros(6, dtype=torch.long),
                      splits=torch.tensor([0, 0, 0, 2, 2, 2], dtype=torch.int8))
    assert _not_in_training_split(store, store.indices("test")).tolist() == [3, 5]


def test_a_recorded_plan_that_no_longer_matches_the_run_is_refused(cache_dir, tmp_path):
    from simulation.reports.audit import AuditError, record_canary_plan

    cfg = RunConfig.from_flat({**SMALL, "num-clients": 2})
    plan = record_canary_plan(run_dir=tmp_path, cfg=cfg, store=load_store(cfg))
    saved = json.loads((tmp_path / CANARY_FILE).read_text())
    assert saved["count"] == len(plan) == 100 and saved["included"] == int(plan.included.sum())
    saved["canaries"][0]["included"] = not saved["canaries"][0]["included"]
    (tmp_path / CANARY_FILE).write_text(json.dumps(saved))
    with pytest.raises(AuditError, match="differs from the plan"):
        record_canary_plan(run_dir=tmp_path, cfg=cfg, store=load_store(cfg))
