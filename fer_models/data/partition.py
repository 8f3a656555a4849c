"""Seeded, deterministic splits of a training set over simulated clients.

Every partitioner maps labels to ``num_partitions`` sorted ``int64`` index arrays covering each sample
exactly once; the result depends only on (seed, arguments, labels). We do not use flwr-datasets
partitioners: they operate on Hugging Face ``datasets.Dataset`` objects (a heavy dependency), while our
data lives in an in-memory uint8 tensor store with numpy label arrays.
"""

from __future__ import annotations

import functools
import logging
import math
from abc import ABC, abstractmethod
from typing import Any, Callable

import numpy as np

from fer_models.common.labels import NUM_CLASSES

logger = logging.getLogger(__name__)

PARTITIONER_NAMES: tuple[str, ...] = ("iid", "dirichlet", "shard", "quantity", "group")
QUANTITY_DISTRIBUTIONS: tuple[str, ...] = ("lognormal", "powerlaw")
_Groups = np.ndarray | None


class PartitionError(ValueError):
    """Bad partitioner arguments, or a split that cannot satisfy them."""


def _check_int(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise PartitionError(f"{name}={value!r} is invalid: expected an integer >= {minimum}")
    return int(value)


def _check_positive(name: str, value: Any) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise PartitionError(f"{name}={value!r} is invalid: expected a finite number > 0")
    return float(value)


def _apportion(weights: np.ndarray, total: int, *, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Integers in [low, high] summing to ``total``, close to ``total * w / sum(w)`` (largest remainder)."""
    quota = total * weights / weights.sum()
    counts = np.clip(np.floor(quota), low, high).astype(np.int64)
    while counts.sum() < total:
        gap = np.where(counts < high, quota - counts, -np.inf)
        counts[int(np.argmax(gap))] += 1
    while counts.sum() > total:
        gap = np.where(counts > low, quota - counts, np.inf)
        counts[int(np.argmin(gap))] -= 1
    return counts


class Partitioner(ABC):
    """Base class: checks arguments up front, splits, then enforces coverage and ``min_size``."""

    name: str = ""
    _hint: str = ""  # extra advice for the min_size error, e.g. "a larger alpha"

    def __init__(self, *, num_partitions: int, seed: int, min_size: int = 1) -> None:
        self.num_partitions = _check_int("num_partitions", num_partitions, minimum=1)
        self.seed = _check_int("seed", seed, minimum=0)
        self.min_size = _check_int("min_size", min_size, minimum=0)

    def partition(self, labels: np.ndarray, *, groups: np.ndarray | None = None) -> list[np.ndarray]:
        """Split indices ``0..len(labels)-1`` into ``num_partitions`` sorted int64 arrays.

        ``groups`` (one group name per sample) is required by "group" and ignored by the others.
        """
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise PartitionError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
        if labels.size and labels.min() < 0:
            raise PartitionError(f"labels must be >= 0, got {int(labels.min())}")
        if groups is not None and np.shape(groups) != labels.shape:
            raise PartitionError(f"groups must have the shape of labels {labels.shape}, got {np.shape(groups)}")
        n, p, m = labels.size, self.num_partitions, self.min_size
        if n < p * m:
            raise PartitionError(
                f"{self.name}: cannot give {p} clients min_size={m} samples each from {n} samples "
                f"(at most {n // max(m, 1)} clients fit); {self._advice()}")
        groups = None if groups is None else np.asarray(groups)
        parts = self._split(labels.astype(np.int64), groups, np.random.default_rng(self.seed))
        parts = [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]
        if len(parts) != p or not np.array_equal(np.sort(np.concatenate(parts)), np.arange(n)):
            raise RuntimeError(f"{self.name}: internal error, partitions do not cover every sample once")
        problem = self._too_small(parts)
        if problem:
            raise PartitionError(f"{self.name}: {problem}; {self._advice()}")
        logger.debug("%s: %d samples over %d clients, sizes %s", self.name, n, p, [len(x) for x in parts])
        return parts

    @abstractmethod
    def _split(self, labels: np.ndarray, groups: _Groups, rng: np.random.Generator) -> list[np.ndarray]:
        """Return ``num_partitions`` index arrays covering every sample once."""

    def _too_small(self, parts: list[np.ndarray]) -> str | None:
        sizes = np.array([len(part) for part in parts])
        small = np.flatnonzero(sizes < self.min_size)
        if not small.size:
            return None
        worst = int(small[np.argmin(sizes[small])])
        return (f"client {worst} got {sizes[worst]} samples, below min_size={self.min_size} "
                f"({small.size} of {len(parts)} clients are below it)")

    def _advice(self) -> str:
        hint = f", {self._hint} " if self._hint else " "
        return (f"use fewer clients (num_partitions={self.num_partitions}){hint}"
                f"or a smaller min-client-samples (min_size={self.min_size})")


class IidPartitioner(Partitioner):
    """Uniformly shuffled split; client sizes differ by at most 1."""

    name = "iid"

    def _split(self, labels: np.ndarray, groups: _Groups, rng: np.random.Generator) -> list[np.ndarray]:
        return np.array_split(rng.permutation(labels.size), self.num_partitions)


class DirichletPartitioner(Partitioner):
    """Label skew: each class is split over clients by proportions ~ Dir(alpha) (smaller = more skew).

    A draw leaving a client below ``min_size`` is replaced by the next seeded draw (``max_retries`` at most).
    """

    name = "dirichlet"

    def __init__(self, *, num_partitions: int, seed: int, min_size: int = 1, alpha: float = 0.5,
                 max_retries: int = 100) -> None:
        super().__init__(num_partitions=num_partitions, seed=seed, min_size=min_size)
        self.alpha = _check_positive("alpha", alpha)
        self.max_retries = _check_int("max_retries", max_retries, minimum=1)
        self._hint = f"a larger alpha (alpha={self.alpha:g})"

    def _draw(self, labels: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        p = self.num_partitions
        chunks: list[list[np.ndarray]] = [[] for _ in range(p)]
        for cls in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == cls))
            props = np.nan_to_num(rng.dirichlet(np.full(p, self.alpha)))
            if props.sum() <= 0:  # guard against underflow at tiny alpha
                props[rng.integers(p)] = 1.0
            cuts = np.round(np.cumsum(props / props.sum())[:-1] * idx.size).astype(np.int64)
            for client, piece in enumerate(np.split(idx, cuts)):
                chunks[client].append(piece)
        return [np.concatenate(c) if c else np.empty(0, np.int64) for c in chunks]

    def _split(self, labels: np.ndarray, groups: _Groups, rng: np.random.Generator) -> list[np.ndarray]:
        for _ in range(self.max_retries):
            parts = self._draw(labels, rng)
            problem = self._too_small(parts)
            if problem is None:
                return parts
        raise PartitionError(f"dirichlet: after {self.max_retries} seeded draws, {problem}; {self._advice()}")


class ShardPartitioner(Partitioner):
    """Pathological non-IID: every class is cut into single-class shards, each client is dealt k shards.

    Shards per class are proportional to class size (at least one each), ``num_partitions * k`` in all,
    so every sample is assigned and every client holds at most ``classes_per_client`` distinct classes.
    Needs ``num_partitions * classes_per_client >= number of classes present``.
    """

    name = "shard"

    def __init__(self, *, num_partitions: int, seed: int, min_size: int = 1, classes_per_client: int = 2,
                 num_classes: int = NUM_CLASSES) -> None:
        super().__init__(num_partitions=num_partitions, seed=seed, min_size=min_size)
        self.num_classes = _check_int("num_classes", num_classes, minimum=1)
        self.classes_per_client = _check_int("classes_per_client", classes_per_client, minimum=1)
        if self.classes_per_client > self.num_classes:
            raise PartitionError(f"classes_per_client={classes_per_client} is invalid: expected at most "
                                 f"num_classes={self.num_classes}")

    def _split(self, labels: np.ndarray, groups: _Groups, rng: np.random.Generator) -> list[np.ndarray]:
        p, k = self.num_partitions, self.classes_per_client
        if labels.size and labels.max() >= self.num_classes:
            raise PartitionError(f"shard: label {int(labels.max())} is out of range for "
                                 f"num_classes={self.num_classes}")
        classes, counts = np.unique(labels, return_counts=True)
        shards_total = p * k
        shards = f"shard: num_partitions={p} x classes_per_client={k} = {shards_total} shards"
        if shards_total < classes.size:
            raise PartitionError(f"{shards} cannot cover the {classes.size} classes present "
                                 "(a shard holds one class): use more clients or a larger classes-per-client")
        if shards_total > labels.size:
            raise PartitionError(f"{shards} exceed the {labels.size} samples: use fewer clients "
                                 f"or a smaller classes-per-client")
        per_class = _apportion(counts.astype(float), shards_total, low=np.ones_like(counts), high=counts)
        pieces: list[np.ndarray] = []
        for cls, n_shards in zip(classes, per_class):
            pieces.extend(np.array_split(rng.permutation(np.flatnonzero(labels == cls)), int(n_shards)))
        order = rng.permutation(shards_total)
        return [np.concatenate([pieces[s] for s in order[c * k:(c + 1) * k]]) for c in range(p)]


class QuantityPartitioner(Partitioner):
    """Quantity skew: IID labels, client sizes ~ lognormal(0, sigma) or Pareto(exponent) weights.

    Every client first gets ``min_size`` samples, the rest is shared in proportion to the weights,
    so sizes are >= min_size and sum to N exactly.
    """

    name = "quantity"

    def __init__(self, *, num_partitions: int, seed: int, min_size: int = 1, distribution: str = "lognormal",
                 sigma: float = 1.0, exponent: float = 2.0) -> None:
        super().__init__(num_partitions=num_partitions, seed=seed, min_size=min_size)
        if distribution not in QUANTITY_DISTRIBUTIONS:
            raise PartitionError(f"distribution={distribution!r} is invalid: expected one of "
                                 f"{', '.join(QUANTITY_DISTRIBUTIONS)}")
        self.distribution = distribution
        self.sigma = _check_positive("sigma", sigma)
        self.exponent = _check_positive("exponent", exponent)

    def _split(self, labels: np.ndarray, groups: _Groups, rng: np.random.Generator) -> list[np.ndarray]:
        p = self.num_partitions
        if self.distribution == "lognormal":
            weights = rng.lognormal(mean=0.0, sigma=self.sigma, size=p)
        else:
            weights = rng.pareto(self.exponent, size=p) + 1.0
        spare = labels.size - p * self.min_size  # >= 0, checked by partition()
        sizes = self.min_size + _apportion(weights, spare, low=np.zeros(p, np.int64), high=np.full(p, spare))
        return np.split(rng.permutation(labels.size), np.cumsum(sizes)[:-1])


PartitionerFactory = Callable[..., Partitioner]  # called as f(num_partitions=, seed=, min_size=)


class GroupPartitioner(Partitioner):
    """Each client draws from one group only (e.g. source dataset or subject).

    Clients go to groups in proportion to group size (at least one per group; groups sorted, clients
    numbered group by group); each group's samples are split over its clients by ``inner`` (a callable
    taking ``num_partitions=, seed=, min_size=``; IID when None). After :meth:`partition`,
    ``client_groups[i]`` is the group of client ``i``.
    """

    name = "group"

    def __init__(self, *, num_partitions: int, seed: int, min_size: int = 1,
                 inner: PartitionerFactory | None = None) -> None:
        super().__init__(num_partitions=num_partitions, seed=seed, min_size=min_size)
        self.inner: PartitionerFactory = inner if inner is not None else IidPartitioner
        if not callable(self.inner):
            raise PartitionError(f"inner={inner!r} is invalid: expected None or a partitioner factory")
        probe = self.inner(num_partitions=1, seed=self.seed, min_size=self.min_size)
        if not isinstance(probe, Partitioner) or isinstance(probe, GroupPartitioner):
            raise PartitionError(f"inner={inner!r} is invalid: it must build a non-group Partitioner")
        self.client_groups: np.ndarray | None = None

    def _split(self, labels: np.ndarray, groups: _Groups, rng: np.random.Generator) -> list[np.ndarray]:
        if groups is None:
            raise PartitionError("group: groups is required (one group name per sample), got None; "
                                 "pass groups=... or use another partitioner")
        names, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
        if self.num_partitions < names.size:
            listed = ", ".join(map(str, names))
            raise PartitionError(f"group: num_partitions={self.num_partitions} is smaller than the "
                                 f"{names.size} groups ({listed}): use at least {names.size} clients")
        clients = _apportion(sizes.astype(float), self.num_partitions, low=np.ones_like(sizes), high=sizes)
        parts: list[np.ndarray] = []
        for g, (name, n_clients) in enumerate(zip(names, clients)):
            members = np.flatnonzero(inverse == g)
            inner = self.inner(num_partitions=int(n_clients), seed=int(rng.integers(2**31)),
                               min_size=self.min_size)
            try:
                parts.extend(members[sub] for sub in inner.partition(labels[members]))
            except PartitionError as exc:
                where = f"group {name!r} ({members.size} samples, {n_clients} clients)"
                raise PartitionError(f"{where}: {exc}") from exc
        self.client_groups = np.repeat(names, clients)
        return parts


def make_partitioner(*, name: str, num_partitions: int, seed: int, min_size: int = 1, alpha: float = 0.5,
                     classes_per_client: int = 2, inner: str = "iid") -> Partitioner:
    """Build a partitioner by name; ``inner`` names how "group" splits each group (any non-group name)."""
    common = dict(num_partitions=num_partitions, seed=seed, min_size=min_size)
    if name == "iid":
        return IidPartitioner(**common)
    if name == "dirichlet":
        return DirichletPartitioner(**common, alpha=alpha)
    if name == "shard":
        return ShardPartitioner(**common, classes_per_client=classes_per_client)
    if name == "quantity":
        return QuantityPartitioner(**common)
    if name == "group":
        if inner == "group" or inner not in PARTITIONER_NAMES:
            allowed = ", ".join(n for n in PARTITIONER_NAMES if n != "group")
            raise PartitionError(f"inner={inner!r} is invalid: expected one of {allowed}")
        factory = functools.partial(make_partitioner, name=inner, alpha=alpha,
                                    classes_per_client=classes_per_client)
        return GroupPartitioner(**common, inner=factory)
    raise PartitionError(f"unknown partitioner name={name!r}: expected one of {', '.join(PARTITIONER_NAMES)}")


def label_histogram(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Per-client label counts, shape ``(len(parts), num_classes)``."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise PartitionError(f"labels must lie in 0..{num_classes - 1} (num_classes={num_classes}), "
                             f"got {int(labels.min())}..{int(labels.max())}")
    rows = [np.bincount(labels[part], minlength=num_classes) for part in parts]
    return np.array(rows, dtype=np.int64).reshape(len(parts), num_classes)


def mean_label_entropy(hist: np.ndarray) -> float:
    """Mean over non-empty clients of the Shannon entropy (bits) of each client's label distribution."""
    hist = np.asarray(hist, dtype=float)
    totals = hist.sum(axis=1)
    rows = hist[totals > 0] / totals[totals > 0, None]
    if not rows.size:
        return 0.0
    logs = np.log2(np.where(rows > 0, rows, 1.0))
    return float(np.mean(-(rows * logs).sum(axis=1)))
