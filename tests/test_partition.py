"""Partitioners: coverage, determinism, min_size, skew and argument checks on synthetic labels."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from fer_models.data.partition import (
    PARTITIONER_NAMES,
    DirichletPartitioner,
    GroupPartitioner,
    IidPartitioner,
    Partitioner,
    PartitionError,
    QuantityPartitioner,
    ShardPartitioner,
    label_histogram,
    make_partitioner,
    mean_label_entropy,
)

NUM_CLASSES = 7
# FER2013 training-set class counts (angry, disgust, fear, happy, sad, surprise, neutral), scaled.
FER_COUNTS = np.array([3995, 436, 4097, 7215, 4830, 3171, 4965])
CLIENTS = 10


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    counts = np.maximum(1, np.round(FER_COUNTS * 3000 / FER_COUNTS.sum())).astype(int)
    lab = np.repeat(np.arange(NUM_CLASSES), counts)
    return np.random.default_rng(123).permutation(lab).astype(np.int64)


@pytest.fixture(scope="module")
def groups(labels: np.ndarray) -> np.ndarray:
    """Three sources of unequal size (60% / 30% / 10%)."""
    pick = np.random.default_rng(7).choice(3, size=labels.size, p=[0.6, 0.3, 0.1])
    return np.array(["fer2013", "ckplus", "jaffe"])[pick]


def build(name: str, *, seed: int = 0, num_partitions: int = CLIENTS, min_size: int = 1, **kw) -> Partitioner:
    return make_partitioner(name=name, num_partitions=num_partitions, seed=seed, min_size=min_size, **kw)


def run(p: Partitioner, labels: np.ndarray, groups: np.ndarray) -> list[np.ndarray]:
    return p.partition(labels, groups=groups if isinstance(p, GroupPartitioner) else None)


@pytest.mark.parametrize("name", PARTITIONER_NAMES)
def test_every_index_in_exactly_one_client(name: str, labels: np.ndarray, groups: np.ndarray) -> None:
    parts = run(build(name), labels, groups)
    assert len(parts) == CLIENTS
    for part in parts:
        assert part.dtype == np.int64 and np.all(np.diff(part) > 0)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(labels.size))


@pytest.mark.parametrize("name", PARTITIONER_NAMES)
def test_seeded_determinism(name: str, labels: np.ndarray, groups: np.ndarray) -> None:
    a = run(build(name, seed=1), labels, groups)
    b = run(build(name, seed=1), labels, groups)
    c = run(build(name, seed=2), labels, groups)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("name", PARTITIONER_NAMES)
def test_min_size_enforced(name: str, labels: np.ndarray, groups: np.ndarray) -> None:
    parts = run(build(name, min_size=20), labels, groups)
    assert min(len(p) for p in parts) >= 20


@pytest.mark.parametrize("name", PARTITIONER_NAMES)
def test_too_strict_min_size_raises_helpfully(name: str, labels: np.ndarray, groups: np.ndarray) -> None:
    strict = labels.size // CLIENTS + 1
    with pytest.raises(PartitionError, match=rf"min_size={strict}") as info:
        run(build(name, min_size=strict), labels, groups)
    assert "fewer clients" in str(info.value) and "min-client-samples" in str(info.value)


def test_dirichlet_min_size_failure_names_client_and_alpha(labels: np.ndarray) -> None:
    p = DirichletPartitioner(num_partitions=CLIENTS, seed=0, min_size=250, alpha=0.05, max_retries=5)
    with pytest.raises(PartitionError, match=r"after 5 seeded draws, client \d+ got \d+ samples") as info:
        p.partition(labels)
    assert "larger alpha (alpha=0.05)" in str(info.value)


def test_iid_sizes_within_one(labels: np.ndarray) -> None:
    sizes = [len(p) for p in IidPartitioner(num_partitions=7, seed=3).partition(labels)]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("distribution", ["lognormal", "powerlaw"])
def test_quantity_sizes_sum_to_n_and_unequal(distribution: str, labels: np.ndarray) -> None:
    p = QuantityPartitioner(num_partitions=CLIENTS, seed=0, min_size=15, distribution=distribution)
    sizes = np.array([len(part) for part in p.partition(labels)])
    assert sizes.sum() == labels.size and sizes.min() >= 15
    assert sizes.max() > 2 * sizes.min()


@pytest.mark.parametrize("k", [1, 2, 3])
def test_shard_at_most_k_classes_per_client(k: int, labels: np.ndarray) -> None:
    parts = ShardPartitioner(num_partitions=CLIENTS, seed=0, classes_per_client=k).partition(labels)
    hist = label_histogram(labels, parts, NUM_CLASSES)
    assert np.all((hist > 0).sum(axis=1) <= k)
    assert hist.sum() == labels.size


def test_shard_needs_enough_shards_for_all_classes(labels: np.ndarray) -> None:
    with pytest.raises(PartitionError, match=r"classes-per-client"):
        ShardPartitioner(num_partitions=3, seed=0, classes_per_client=2).partition(labels)


def test_dirichlet_skew_grows_as_alpha_shrinks(labels: np.ndarray) -> None:
    def entropy(alpha: float) -> float:
        values = []
        for seed in range(3):
            parts = DirichletPartitioner(num_partitions=CLIENTS, seed=seed, alpha=alpha).partition(labels)
            values.append(mean_label_entropy(label_histogram(labels, parts, NUM_CLASSES)))
        return float(np.mean(values))

    e100, e1, e01 = entropy(100.0), entropy(1.0), entropy(0.1)
    assert e100 > e1 > e01
    iid = IidPartitioner(num_partitions=CLIENTS, seed=0).partition(labels)
    assert abs(e100 - mean_label_entropy(label_histogram(labels, iid, NUM_CLASSES))) < 0.1


@pytest.mark.parametrize("inner", ["iid", "dirichlet"])
def test_group_clients_draw_from_one_group(inner: str, labels: np.ndarray, groups: np.ndarray) -> None:
    p = build("group", inner=inner, alpha=0.3, min_size=5)
    parts = p.partition(labels, groups=groups)
    assert p.client_groups is not None and len(p.client_groups) == CLIENTS
    for part, group in zip(parts, p.client_groups):
        assert set(groups[part]) == {group}
    assert set(p.client_groups) == set(groups)
    counts = {g: int(np.sum(p.client_groups == g)) for g in set(groups)}
    assert counts["fer2013"] > counts["ckplus"] >= counts["jaffe"] >= 1


def test_group_then_dirichlet_is_skewed_inside_groups(labels: np.ndarray, groups: np.ndarray) -> None:
    def entropy(inner) -> float:
        part = GroupPartitioner(num_partitions=CLIENTS, seed=0, inner=inner).partition(labels, groups=groups)
        return mean_label_entropy(label_histogram(labels, part, NUM_CLASSES))

    assert entropy(functools.partial(DirichletPartitioner, alpha=0.1)) < entropy(None) - 0.3


def test_group_argument_errors(labels: np.ndarray, groups: np.ndarray) -> None:
    with pytest.raises(PartitionError, match="groups is required"):
        GroupPartitioner(num_partitions=4, seed=0).partition(labels)
    with pytest.raises(PartitionError, match=r"num_partitions=2 .*3 groups"):
        GroupPartitioner(num_partitions=2, seed=0).partition(labels, groups=groups)
    with pytest.raises(PartitionError, match="inner"):
        build("group", inner="group")
    with pytest.raises(PartitionError, match="alpha"):  # checked up front through the inner factory
        build("group", inner="dirichlet", alpha=0.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(name="iid", num_partitions=0), r"num_partitions=0 .*>= 1"),
        (dict(name="iid", num_partitions=2.5), r"num_partitions=2.5"),
        (dict(name="iid", seed=-1), r"seed=-1"),
        (dict(name="iid", min_size=-1), r"min_size=-1"),
        (dict(name="dirichlet", alpha=0.0), r"alpha=0.0 .*> 0"),
        (dict(name="dirichlet", alpha=float("nan")), r"alpha=nan"),
        (dict(name="shard", classes_per_client=8), r"classes_per_client=8 .*num_classes=7"),
        (dict(name="shard", classes_per_client=0), r"classes_per_client=0"),
        (dict(name="nope"), r"iid, dirichlet, shard, quantity, group"),
    ],
)
def test_constructor_argument_checks(kwargs: dict, match: str) -> None:
    args = dict(num_partitions=4, seed=0) | kwargs
    with pytest.raises(PartitionError, match=match):
        make_partitioner(**args)


def test_other_argument_checks(labels: np.ndarray) -> None:
    with pytest.raises(PartitionError, match="distribution='zipf'"):
        QuantityPartitioner(num_partitions=4, seed=0, distribution="zipf")
    with pytest.raises(PartitionError, match="sigma"):
        QuantityPartitioner(num_partitions=4, seed=0, sigma=-1.0)
    with pytest.raises(PartitionError, match="1-D integer"):
        IidPartitioner(num_partitions=4, seed=0).partition(labels.astype(float))
    with pytest.raises(PartitionError, match="out of range"):
        ShardPartitioner(num_partitions=4, seed=0, num_classes=3).partition(labels)


def test_histogram_and_entropy() -> None:
    lab = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    hist = label_histogram(lab, [np.array([0, 1]), np.array([2, 4]), np.array([3, 5, 6, 7])], 3)
    assert hist.tolist() == [[2, 0, 0], [0, 1, 1], [0, 1, 3]]
    expected = (0.0 + 1.0 + -(0.25 * np.log2(0.25) + 0.75 * np.log2(0.75))) / 3
    assert mean_label_entropy(hist) == pytest.approx(expected)
