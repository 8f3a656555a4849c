"""privacy-unit = person: persons are Poisson-sampled and a person's per-sample gradients are
averaged before clipping, so a person with k images contributes one clipped gradient."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flwr.app import Context, RecordDict
from opacus import GradSampleModule

from client.training import privacy_units, train_local
from fer_models.config import ConfigError, RunConfig
from fer_models.data.person_index import person_index
from fer_models.federation.sites import local_data
from fer_models.federation.task import client_data, load_store
from fer_models.models import create_model
from fer_models.models.from_config import build_model
from fer_models.privacy.sgd_helpers import average_rows

pytestmark = pytest.mark.usefixtures("one_thread")


def test_person_index_groups_samples_and_expands_a_batch_of_persons():
    idx = person_index(np.array(["s2", "s1", "s2", "", "s1", "s2"]))
    assert len(idx) == 3 and idx.singletons == 1  # s1, s2 and the sample without an id
    rows, group = idx.expand(torch.tensor([2, 0]))
    members = {int(r) for r, g in zip(rows, group) if g == 0}
    assert members == {0, 2, 5} and [int(r) for r, g in zip(rows, group) if g == 1] == [3]


def test_a_person_with_k_images_gives_one_gradient_equal_to_the_mean_of_theirs():
    torch.manual_seed(0)
    model = create_model("cnn", dropout=0.0).double()
    subjects = np.array(["a", "b", "a", "a", "c", "b"])  # a has 3 images, b 2, c 1
    persons = person_index(subjects)
    x = torch.randn(len(subjects), 1, 1, 48, 48, dtype=torch.float64)
    y = torch.randint(0, 7, (len(subjects),))
    rows, group = persons.expand(torch.arange(len(persons)))
    gsm = GradSampleModule(create_model("cnn", dropout=0.0).double())
    gsm._module.load_state_dict(model.state_dict())
    F.cross_entropy(gsm(x[rows]), y[rows]).backward()
    average_rows(gsm, group=group)
    for p in gsm.parameters():
        assert p.grad_sample.shape[0] == len(persons)  # one row, hence one clipped gradient, per person
    for person in range(len(persons)):
        mine = rows[group == person]
        expected = [torch.zeros_like(p) for p in model.parameters()]
        for i in mine:
            model.zero_grad()
            F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
            for e, p in zip(expected, model.parameters()):
                e += p.grad / len(mine)
        for (name, p), e in zip(gsm._module.named_parameters(), expected):
            assert torch.allclose(p.grad_sample[person], e, atol=1e-8), name


SMALL = {"synthetic-per-class": 12, "synthetic-eval-per-class": 4, "num-clients": 2, "batch-size": 4,
         "num-server-rounds": 2, "min-client-samples": 4, "dp": "sample", "dp-recipe": "none",
         "noise-multiplier": 1.0, "local-epochs": 1}


def _train(cfg: RunConfig, tmp_path, pid: int = 0) -> dict:
    ctx = Context(run_id=1, node_id=1, state=RecordDict(), run_config=cfg.to_flat(),
                  node_config={"partition-id": pid, "num-partitions": cfg.num_clients, "state-dir": str(tmp_path)})
    return train_local(cfg=cfg, context=ctx, local=local_data(cfg, ctx.node_config),
                       global_state=build_model(cfg).state_dict(), server_round=1, lineage="persons").metrics


def test_under_privacy_unit_person_the_client_samples_persons_and_says_so(flower_identity, tmp_path):
    cfg = RunConfig.from_flat({**SMALL, "privacy-unit": "person"})
    data = client_data(cfg, partition_id=0, num_partitions=cfg.num_clients)
    subjects = load_store(cfg).meta["subject"][data.frames[:, 0].numpy()]
    n_persons = len(set(subjects.astype(str)))
    assert n_persons < len(data)  # synthetic subjects show several emotions: persons hold several images
    metrics = _train(cfg, tmp_path)
    assert metrics["privacy-unit-person"] == 1
    # the rate comes from the public sample count (persons are Poisson-sampled over that many slots), never
    # from the private person count
    assert metrics["sample-rate"] == pytest.approx(1 / math.ceil(len(data) / cfg.batch_size))
    image_level = _train(RunConfig.from_flat(SMALL), tmp_path / "images")
    assert image_level["privacy-unit-person"] == 0
    assert image_level["sample-rate"] == pytest.approx(1 / math.ceil(len(data) / cfg.batch_size))


def test_data_without_subject_ids_stays_at_image_level_and_says_so(monkeypatch, caplog):
    cfg = RunConfig.from_flat({**SMALL, "privacy-unit": "person"})
    data = client_data(cfg, partition_id=0, num_partitions=cfg.num_clients)
    local = types.SimpleNamespace(train=data, store=types.SimpleNamespace(meta={}))  # like FER2013
    persons, unit = privacy_units(cfg, local)
    assert persons is None and unit == "image" and "no subject ids" in caplog.text


def test_privacy_unit_person_needs_sample_level_dp():
    with pytest.raises(ConfigError, match="privacy-unit=person applies to dp=sample"):
        RunConfig.from_flat({"dp": "client", "privacy-unit": "person"})


def test_a_ckplus_client_reports_epsilon_per_person(flower_identity, shared_data, tmp_path):
    cfg = RunConfig.from_flat({"data-path": str(shared_data / "ckplus48"), "num-clients": 1, "dp": "sample",
                               "dp-recipe": "none", "noise-multiplier": 1.0, "batch-size": 16, "local-epochs": 1,
                               "num-server-rounds": 2, "privacy-unit": "person", "min-train-clients": 1})
    data = client_data(cfg, partition_id=0, num_partitions=1)
    subjects = load_store(cfg).meta["subject"][data.frames[:, 0].numpy()].astype(str)
    metrics = _train(cfg, tmp_path)
    assert metrics["privacy-unit-person"] == 1 and metrics["epsilon"] > 0
    assert metrics["sample-rate"] == pytest.approx(1 / math.ceil(len(data) / 16))  # the public count sets it
    assert len(set(subjects)) < len(data) / 3  # CK+ subjects hold several images each
