"""privacy-unit = person: the partition places every person at exactly one client.

A person whose images sit at two clients is protected by the composition of both clients'
epsilons, not by the epsilon either reports. Under privacy-unit=person the partitioners therefore
split persons; a split that would share a person is refused naming the subject. The control: the
image-level partition of the same data shares every person, and the same check refuses it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from opacus.accountants.analysis import rdp as rdp_analysis
from PIL import Image

from client.training import train_local
from fer_models.common.labels import EMOTIONS
from fer_models.config import RunConfig
from fer_models.data import generate_synthetic
from fer_models.data.partition import PARTITIONER_NAMES, PartitionError, make_partitioner
from fer_models.data.person_split import SITE_ADVICE, PersonSplitError, check_one_client_per_person, person_units
from fer_models.federation.sites import local_data
from fer_models.federation.task import client_partitions, load_store, train_pool
from fer_models.models.from_config import build_model

SYN = {"synthetic-per-class": 12, "synthetic-eval-per-class": 4, "num-clients": 2, "min-client-samples": 4}
PERSON = {"dp": "sample", "privacy-unit": "person"}


def _persons(parts, subjects) -> dict[str, set[int]]:
    """subject id -> the clients holding at least one of its samples (empty ids skipped)."""
    where: dict[str, set[int]] = {}
    for client, part in enumerate(parts):
        for s in set(np.asarray(subjects)[part].astype(str)) - {""}:
            where.setdefault(s, set()).add(client)
    return where


def _toy(seed: int = 0):
    """60 persons with 1..9 samples each, random labels, one of three groups each; 10 samples without an id."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 10, size=60)
    subjects = np.concatenate([np.repeat([f"S{p:03d}" for p in range(60)], sizes), np.full(10, "")])
    person_group = rng.choice(np.array(["fer2013", "ckplus", "jaffe"]), size=60, p=[0.5, 0.3, 0.2])
    groups = np.concatenate([np.repeat(person_group, sizes), np.full(10, "fer2013")])
    order = rng.permutation(subjects.size)
    return subjects[order], rng.integers(0, 7, subjects.size)[order], groups[order]


@pytest.mark.parametrize("name", PARTITIONER_NAMES)
def test_every_person_sits_at_exactly_one_client_for_each_partitioner(name):
    subjects, labels, groups = _toy()
    n = subjects.size
    persons = person_units(subjects=subjects, unit=np.arange(n), labels=labels,
                           groups=groups if name == "group" else None, num_clients=6)
    assert len(persons) == 60 + 10  # the samples without an id are persons of their own
    parts = make_partitioner(name=name, num_partitions=6, seed=3, min_size=2).partition(
        persons.labels, groups=persons.groups)
    shares = [np.flatnonzero(np.isin(persons.unit, p)) for p in parts]
    assert np.array_equal(np.sort(np.concatenate(shares)), np.arange(n))  # every sample once
    assert all(len(c) == 1 for c in _persons(shares, subjects).values())
    for person in range(len(persons)):  # the label of a person is its samples' majority label
        counts = np.bincount(labels[persons.unit == person], minlength=7)
        assert counts[persons.labels[person]] == counts.max()
    if name == "group":
        assert all(len(set(groups[s])) == 1 for s in shares)  # a client still draws from one group


@pytest.mark.parametrize("name", ["iid", "dirichlet", "shard", "quantity"])
def test_a_person_level_run_partitions_persons_while_images_would_share_them(name):
    flat = {**SYN, "partition": name, "classes-per-client": 4}
    person_cfg = RunConfig.from_flat({**flat, **PERSON})
    subjects = load_store(person_cfg).meta["subject"]
    parts = client_partitions(person_cfg, num_partitions=2)
    assert sum(map(len, parts)) == len(train_pool(person_cfg, load_store(person_cfg)))
    assert all(len(c) == 1 for c in _persons(parts, subjects).values())
    check_one_client_per_person(holdings={f"client {i}": subjects[p] for i, p in enumerate(parts)}, advice="-")
    # control: the image-level partition puts persons at both clients, and the same check refuses it
    images = client_partitions(RunConfig.from_flat(flat), num_partitions=2)
    assert any(len(c) == 2 for c in _persons(images, subjects).values())
    with pytest.raises(PersonSplitError, match=r"person 'syn-train-\d+' sits at client 0, client 1"):
        check_one_client_per_person(holdings={f"client {i}": subjects[p] for i, p in enumerate(images)},
                                    advice="-")


def test_sample_level_partitions_are_unchanged():
    """The IID split of the default synthetic data is a seeded permutation cut in equal parts, as before."""
    cfg = RunConfig.from_flat({"num-clients": 4, "seed": 5})
    pool = train_pool(cfg, load_store(cfg))
    expected = [np.sort(pool[p]) for p in np.array_split(np.random.default_rng(5).permutation(len(pool)), 4)]
    assert all(np.array_equal(a, b) for a, b in zip(client_partitions(cfg, num_partitions=4), expected))


@pytest.mark.parametrize("name", PARTITIONER_NAMES)
def test_without_subject_ids_persons_are_the_samples_and_the_split_is_the_image_split(name):
    _, labels, groups = _toy()
    persons = person_units(subjects=None, unit=np.arange(labels.size), labels=labels,
                           groups=groups if name == "group" else None, num_clients=6)
    assert np.array_equal(persons.unit, np.arange(labels.size)) and np.array_equal(persons.labels, labels)
    build = lambda: make_partitioner(name=name, num_partitions=6, seed=3, min_size=2)  # noqa: E731
    by_person = build().partition(persons.labels, groups=persons.groups)
    by_image = build().partition(labels, groups=groups)
    assert all(np.array_equal(a, b) for a, b in zip(by_person, by_image))


def test_fewer_persons_than_clients_is_refused_naming_the_persons_and_the_fix():
    cfg = RunConfig.from_flat({**SYN, **PERSON, "synthetic-per-class": 3, "num-clients": 4,
                               "min-client-samples": 1})
    with pytest.raises(PersonSplitError, match=r"3 person\(s\) \('syn-train-0000', 'syn-train-0001', "
                                               r"'syn-train-0002'\) for 4 clients") as info:
        client_partitions(cfg, num_partitions=4)
    assert "use at most 3 clients (num-clients)" in str(info.value)
    assert len(client_partitions(RunConfig.from_flat({**SYN, "synthetic-per-class": 3, "num-clients": 4,
                                                      "min-client-samples": 1}), num_partitions=4)) == 4


def test_a_partitioner_limit_counts_persons():
    cfg = RunConfig.from_flat({**SYN, **PERSON, "min-client-samples": 7})  # 12 persons cannot give 2 x 7
    with pytest.raises(PartitionError, match=r"min-client-samples=7 persons each from 12 persons.*"
                                             r"splits persons, not images"):
        client_partitions(cfg, num_partitions=2)


def _manifest(root: Path, *, straddle: bool) -> Path:
    """A manifest of synthetic faces with subject and group columns: 8 persons, 4 in group a, 4 in b."""
    store = generate_synthetic(seed=1, per_class=8, eval_per_class=1)
    rows = []
    for i in range(len(store)):
        subject, split = str(store.meta["subject"][i]), "train" if i < 56 else "test"
        person = int(subject[-4:])
        group = "a" if person < 4 else "b"
        if straddle and subject == "syn-train-0001" and int(store.labels[i]) == 6:
            group = "b"  # one image of a group-a person filed under group b
        path = root / f"{i:03d}.png"
        Image.fromarray(store.images[i].numpy(), "L").save(path)
        rows.append(f"{path.name},{EMOTIONS[int(store.labels[i])]},{split},{subject},{group}")
    (root / "faces.csv").write_text("path,label,split,subject,group\n" + "\n".join(rows) + "\n")
    return root / "faces.csv"


def test_group_partition_keeps_persons_within_groups_and_refuses_a_person_in_two(tmp_path, cache_dir):
    (tmp_path / "ok").mkdir(), (tmp_path / "bad").mkdir()
    flat = {**PERSON, "partition": "group", "num-clients": 4, "min-client-samples": 1}
    cfg = RunConfig.from_flat({**flat, "data-path": str(_manifest(tmp_path / "ok", straddle=False))})
    store = load_store(cfg)
    parts = client_partitions(cfg, num_partitions=4)
    assert all(len(c) == 1 for c in _persons(parts, store.meta["subject"]).values())
    assert all(len(set(store.meta["group"][p])) == 1 for p in parts)
    bad = RunConfig.from_flat({**flat, "data-path": str(_manifest(tmp_path / "bad", straddle=True))})
    with pytest.raises(PersonSplitError, match=r"person 'syn-train-0001' has samples in groups 'a', 'b'"):
        client_partitions(bad, num_partitions=4)


def test_a_sequence_holding_two_subjects_is_refused():
    with pytest.raises(PersonSplitError, match=r"one sample \(a sequence\) holds images of subjects 'S1', 'S2'"):
        person_units(subjects=np.array(["S1", "S1", "S2"]), unit=np.array([0, 0, 0]), labels=np.array([3]),
                     num_clients=1)


def test_sites_sharing_a_subject_id_are_refused_naming_the_subject_and_the_sites():
    with pytest.raises(PersonSplitError, match=r"person 'S010' sits at site ckplus, site lab") as info:
        check_one_client_per_person(holdings={"site ckplus": np.array(["S010", "S011", ""]),
                                              "site lab": np.array(["", "S010", "P7"])},
                                    advice=SITE_ADVICE)
    assert str(info.value).endswith(SITE_ADVICE)
    check_one_client_per_person(holdings={"site a": np.array(["", "S1"]), "site b": np.array(["", "S2"])},
                                advice="-")  # samples without an id are persons of their own: never shared


# --- (c) the reported epsilon of a person is that of the one client holding it --------------------------------
DP = {**SYN, **PERSON, "model": "cnn", "batch-size": 4, "num-server-rounds": 2, "dp-recipe": "none",
      "noise-multiplier": 1.3, "max-grad-norm": 1.0, "local-epochs": 1, "optimizer": "sgd", "momentum": 0.0,
      "learning-rate": 0.1, "eval-batch-size": 64}
#: Opacus' RDP orders, written out (the recount must use the same orders to agree to 1e-9).
ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))


def _two_rounds(cfg: RunConfig, pid: int, state_dir: Path) -> dict:
    ctx = Context(run_id=1, node_id=pid + 1, state=RecordDict(), run_config=cfg.to_flat(),
                  node_config={"partition-id": pid, "num-partitions": cfg.num_clients, "state-dir": str(state_dir)})
    local, state, metrics = local_data(cfg, ctx.node_config), build_model(cfg).state_dict(), {}
    for server_round in (1, 2):
        result = train_local(cfg=cfg, context=ctx, local=local, global_state=state, server_round=server_round,
                             lineage="person-recount")
        state, metrics = result.state, result.metrics
    return metrics


def test_a_persons_reported_epsilon_is_an_independent_recount_at_its_one_client(flower_identity, one_thread,
                                                                               tmp_path):
    cfg = RunConfig.from_flat(DP)
    store = load_store(cfg)
    subjects = np.asarray(store.meta["subject"]).astype(str)
    parts = client_partitions(cfg, num_partitions=cfg.num_clients)
    reported = [_two_rounds(cfg, pid, tmp_path / f"node{pid}") for pid in range(cfg.num_clients)]
    person = subjects[parts[1][0]]
    holders = [pid for pid, part in enumerate(parts) if person in set(subjects[part])]
    assert holders == [1]  # one client holds it: nothing to compose across clients
    mine = reported[1]
    # independent recount of that client's work, from its data: persons are Poisson-sampled over as many slots
    # as the client has samples (the public num-examples), so the rate never reveals the person count
    q = 1.0 / -(-len(parts[1]) // cfg.batch_size)
    steps = cfg.num_server_rounds * cfg.local_epochs * int(1 / q)
    assert (mine["noise-multiplier"], mine["sample-rate"], mine["dp-steps"]) == (cfg.noise_multiplier, q, steps)
    rdp = rdp_analysis.compute_rdp(q=q, noise_multiplier=cfg.noise_multiplier, steps=steps, orders=ORDERS)
    epsilon, _ = rdp_analysis.get_privacy_spent(orders=ORDERS, rdp=rdp, delta=cfg.target_delta)
    assert mine["privacy-unit-person"] == 1
    assert abs(mine["epsilon"] - epsilon) < 1e-9, (mine["epsilon"], epsilon)


def test_canaries_are_refused_under_the_person_unit():
    """A canary is one image at a random client: under privacy-unit=person it would split its subject's person."""
    from fer_models.config import ConfigError, RunConfig

    with pytest.raises(ConfigError, match="audit-canaries with privacy-unit=person"):
        RunConfig.from_flat({"dp": "sample", "privacy-unit": "person", "audit-canaries": 10})


def test_a_simulation_refuses_two_sites_that_hold_one_person(tmp_path, cache_dir):
    """The simulation's operator holds every site, so it checks what no site can: the same subjects at two sites."""
    from simulation.commands.cmd_simulate import check_sites

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    one, other = _manifest(tmp_path / "a", straddle=False), _manifest(tmp_path / "b", straddle=False)
    flat = {**PERSON, "client-data": "site", "num-clients": 2, "min-client-samples": 1,
            "data-path": f"clinic={one},school={other}", "eval-data-path": str(one)}
    with pytest.raises(PersonSplitError, match=r"syn-train-000\d.*site clinic.*site school"):
        check_sites(RunConfig.from_flat(flat))
    check_sites(RunConfig.from_flat({**flat, "privacy-unit": "sample"}))  # images: nothing to compose
