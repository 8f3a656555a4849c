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
from fer_models.wire import PUBLIC_DP_METRICS, ROUND_SECONDS, TRAIN_STATISTICS
from fer_models.task import build_model, client_data

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
    from fer_models import engine

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
    import fer_models.wire as wire

    codes = {name: value for name, value in vars(wire).items()
             if name.isupper() and isinstance(value, int) and not isinstance(value, bool) and value >= 4000}
    assert len(codes) >= 10, codes
    by_value: dict[int, list[str]] = {}
    for name, value in codes.items():
        by_value.setdefault(value, []).append(name)
    assert {v: n for v, n in by_value.items() if len(n) > 1} == {}
