"""What a client puts on the wire: only the model's arrays and scalar metrics, never its data.

The ClientApp's train handler is called in-process (as the SuperNode's ClientApp process calls it)
and its reply Message is inspected record by record: exactly one ArrayRecord with exactly the
model's parameter names and shapes, MetricRecords of scalars, no ConfigRecord, no images, no labels,
no per-sample values. Under DP the metrics are only the public or accounted ones (no train loss,
accuracy, samples seen or timing: those are computed from private data outside the mechanism).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from client.app import train
from fer_models.config import RunConfig
from fer_models.federation.task import client_data
from fer_models.federation.wire import GLOBAL_LOSS, PUBLIC_DP_METRICS, ROUND_SECONDS, TRAIN_STATISTICS
from fer_models.models.from_config import build_model

pytestmark = pytest.mark.simulation

SMALL = {"synthetic-per-class": 12, "synthetic-eval-per-class": 4, "num-clients": 2, "batch-size": 16,
         "num-server-rounds": 2, "local-epochs": 1, "min-client-samples": 4}
ROUNDS = 2


def _replies(cfg: RunConfig, pid: int) -> list[Message]:
    ctx = Context(run_id=1, node_id=pid + 1, node_config={"partition-id": pid, "num-partitions": cfg.num_clients},
                  state=RecordDict(), run_config=cfg.to_flat())
    state = build_model(cfg).state_dict()
    replies = []
    for r in range(1, ROUNDS + 1):
        msg = Message(RecordDict({"arrays": ArrayRecord(state), "config": ConfigRecord({"server-round": r})}),
                      dst_node_id=1, message_type="train")
        reply = train(msg, ctx)
        assert not reply.has_error(), reply.error
        replies.append(reply)
        state = reply.content["arrays"].to_torch_state_dict()
    return replies


@pytest.mark.parametrize("dp", ["none", "sample"])
def test_a_train_reply_carries_only_model_arrays_and_scalar_metrics(flower_identity, dp):
    cfg = RunConfig.from_flat({**SMALL, "dp": dp, "noise-multiplier": 1.0, "dp-recipe": "none"})
    pid = 1
    data = client_data(cfg, partition_id=pid, num_partitions=cfg.num_clients)
    n_local = len(data)
    expected = {k: tuple(v.shape) for k, v in build_model(cfg).state_dict().items()}
    local_images = data.images[data.frames[:, 0]].reshape(n_local, -1).float()  # this client's faces
    for rnd, reply in enumerate(_replies(cfg, pid), start=1):
        content = reply.content
        assert set(content.keys()) == {"arrays", "metrics"}
        assert len(content.config_records) == 0
        assert list(content.array_records) == ["arrays"] and list(content.metric_records) == ["metrics"]

        arrays = content["arrays"]
        assert {k: tuple(a.shape) for k, a in arrays.items()} == expected  # exactly the model's parameters
        sent_bytes = sum(len(a.data) for a in arrays.values())
        model_bytes = sum(t.numel() * t.element_size() for t in build_model(cfg).state_dict().values())
        assert sent_bytes <= model_bytes * 1.01 + 1024, "more array payload than the model itself"
        for name, arr in arrays.items():  # no tensor holds a face of the local data
            flat = torch.from_numpy(np.ascontiguousarray(arr.numpy())).reshape(-1).float()
            if flat.numel() >= local_images.shape[1]:
                window = flat[: local_images.shape[1]]
                assert not torch.isclose(local_images, window).all(dim=1).any(), f"{name} holds an image"

        metrics = content["metrics"]
        assert isinstance(metrics, MetricRecord)
        for key, value in metrics.items():
            assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
        if dp == "sample":
            assert set(metrics) <= PUBLIC_DP_METRICS, sorted(set(metrics) - PUBLIC_DP_METRICS)
            assert ROUND_SECONDS not in metrics  # timing goes with the train statistics
        else:
            assert set(TRAIN_STATISTICS) <= set(metrics)
            assert metrics[ROUND_SECONDS] >= metrics["train-seconds"] > 0  # the handler's span holds the training
        assert not any(k for k in metrics if any(w in k.lower() for w in ("image", "pixel", "label", "sample-id",
                                                                          "indices", "prediction"))), list(metrics)
        assert metrics["num-examples"] <= n_local * cfg.local_epochs


def test_the_reply_tensors_are_the_trained_weights_not_the_data(flower_identity):
    cfg = RunConfig.from_flat({**SMALL, "dp": "none"})
    from fer_models.training import engine
    reply = _replies(cfg, 0)[0]
    state = reply.content["arrays"].to_torch_state_dict()
    sent = build_model(cfg)
    trained = build_model(cfg)
    trained.load_state_dict(state)  # loads strictly: no extra or missing tensors
    assert any(not torch.equal(state[k], v) for k, v in sent.state_dict().items())  # not the model it was sent
    data = client_data(cfg, partition_id=0, num_partitions=cfg.num_clients)
    loss = {name: engine.evaluate(model=m, data=data, batch_size=64, device=torch.device("cpu")).loss
            for name, m in (("sent", sent), ("trained", trained))}
    assert loss["trained"] < loss["sent"], loss  # it learned the client's data: the weights are trained ones


def test_every_error_code_names_one_failure():
    """Two failures sharing a code would be indistinguishable in the run record and in a site's logs."""
    import fer_models.federation.wire as wire

    codes = {name: value for name, value in vars(wire).items()
             if name.isupper() and isinstance(value, int) and not isinstance(value, bool) and value >= 4000}
    assert len(codes) >= 10, codes
    by_value: dict[int, list[str]] = {}
    for name, value in codes.items():
        by_value.setdefault(value, []).append(name)
    assert {v: n for v, n in by_value.items() if len(n) > 1} == {}


_LINEAGES = iter(range(10**6))


def _one_reply(cfg: RunConfig, *, local=None, node: dict | None = None, pid: int = 1) -> dict:
    """The metrics of one train round of client ``pid`` (its own state dir under FEDFER_STATE_DIR)."""
    from client.training import train_local
    from fer_models.federation.sites import local_data

    ctx = Context(run_id=1, node_id=pid + 1, state=RecordDict(), run_config=cfg.to_flat(),
                  node_config={"partition-id": pid, "num-partitions": cfg.num_clients, **(node or {})})
    local = local if local is not None else local_data(cfg, ctx.node_config)
    return train_local(cfg=cfg, context=ctx, local=local, global_state=build_model(cfg).state_dict(),
                       server_round=1, lineage=f"wire-{next(_LINEAGES)}").metrics


def test_under_secure_aggregation_a_reply_sends_no_training_statistics_beside_the_masked_update(flower_identity):
    """SecAgg+ hides one site's update in the sum: its loss, accuracy, samples seen and timing must not travel in
    the clear beside it (dp=none here: nothing else would keep them off the wire)."""
    secagg = RunConfig.from_flat({**SMALL, "num-clients": 3, "dp": "none", "secure-aggregation": "secaggplus"})
    metrics = _one_reply(secagg)
    private = {*TRAIN_STATISTICS, ROUND_SECONDS, GLOBAL_LOSS}
    assert not private & set(metrics) and set(metrics) <= PUBLIC_DP_METRICS, sorted(metrics)
    plain = _one_reply(RunConfig.from_flat({**SMALL, "num-clients": 3, "dp": "none"}))  # control: they are sent
    assert set(TRAIN_STATISTICS) <= set(plain)


def test_under_privacy_unit_person_nothing_on_the_wire_depends_on_the_private_person_count(flower_identity):
    """Two clients with the same images, one holding 4 persons and one 21: the server must not tell them apart.
    The old rate 1 / ceil(persons / batch) would have sent 1.0 and 0.5; both now send 1 / ceil(samples / batch)."""
    import dataclasses
    import math

    from fer_models.federation.sites import local_data

    cfg = RunConfig.from_flat({**SMALL, "dp": "sample", "dp-recipe": "none", "privacy-unit": "person",
                               "target-epsilon": 3.0, "noise-multiplier": 0.0, "local-epochs": 1})
    base = local_data(cfg, {"partition-id": 1, "num-partitions": cfg.num_clients})
    n = len(base.train)

    def with_persons(count: int):
        subjects = np.array([""] * len(base.store), dtype=object)
        subjects[base.train.frames[:, 0].numpy()] = [f"s{k % count}" for k in range(n)]
        store = dataclasses.replace(base.store, meta={**base.store.meta, "subject": subjects.astype(str)})
        return dataclasses.replace(base, store=store)

    few, many = with_persons(4), with_persons(21)
    leaked = [1 / math.ceil(p / cfg.batch_size) for p in (4, 21)]
    assert leaked[0] != leaked[1]  # control: the old rate tells the two apart
    wire = ("sample-rate", "dp-steps", "noise-multiplier", "epsilon", "num-examples", "privacy-unit-person")
    sent = [{k: v for k, v in _one_reply(cfg, local=local).items() if k in wire} for local in (few, many)]
    assert sent[0] == sent[1] and sent[0]["privacy-unit-person"] == 1
    assert sent[0]["sample-rate"] == pytest.approx(1 / math.ceil(n / cfg.batch_size))
    # a site may declare its person count public: the rate then comes from it, the same for any real count
    declared = [_one_reply(cfg, local=local, node={"public-person-count": 10})["sample-rate"] for local in (few, many)]
    assert declared == [pytest.approx(1 / math.ceil(10 / cfg.batch_size))] * 2
