"""From a :class:`RunConfig` to the objects a run needs: dataset, client shares, eval sets, model.

Both the ClientApp and the ServerApp (and the centralized baseline) call these, so a client and
the server always agree on the data, the partition and the model architecture.
"""

from __future__ import annotations

import functools
import logging
import re

import numpy as np
import torch

from fer_models.audit.canaries import canary_plan_for, with_canaries
from fer_models.config import RunConfig
from fer_models.data import FaceStore, load_dataset
from fer_models.data.clips import make_clips
from fer_models.data.partition import PartitionError, make_partitioner
from fer_models.data.person_split import (
    PersonSplitError,
    PersonUnits,
    check_one_client_per_person,
    in_persons,
    person_units,
)
from fer_models.data.samples import ClipSet, stratified_subsample
from fer_models.models.from_config import build_model

logger = logging.getLogger(__name__)


def load_store(cfg: RunConfig) -> FaceStore:
    """The run's dataset (memoised in-process by the loader)."""
    fmt = "synthetic" if cfg.uses_synthetic else cfg.data_format
    return load_dataset(data_path=cfg.data_path, data_format=fmt, cache_dir=cfg.cache_dir, seed=cfg.seed,
                        synthetic_per_class=cfg.synthetic_per_class,
                        synthetic_eval_per_class=cfg.synthetic_eval_per_class, leave_out=cfg.leave_out_group)


def train_pool(cfg: RunConfig, store: FaceStore) -> np.ndarray:
    """Store indices of the training split, capped by ``max-train-samples`` (stratified)."""
    idx = store.indices("train")
    keep = stratified_subsample(store.labels[torch.from_numpy(idx)].numpy(), limit=cfg.max_train_samples,
                                seed=cfg.seed)
    return idx[keep]


def _units(cfg: RunConfig, store: FaceStore, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indivisible units of the pool: whole sequences for real clips (a clip never straddles two
    clients), single images otherwise. Returns (unit id per pool position, first pool position per unit)."""
    seq = store.meta.get("sequence")
    if cfg.clip_source != "real" or seq is None:
        return np.arange(len(pool)), np.arange(len(pool))
    keys = np.array([s if s else f"#img{i}" for s, i in zip(seq[pool].astype(str), pool)])
    _, first, unit = np.unique(keys, return_index=True, return_inverse=True)
    return unit, first


#: The partitioners' parameter names and the run settings they come from (errors name the settings).
_PARTITION_KEYS = {"num_partitions": "num-clients", "min_size": "min-client-samples", "alpha": "dirichlet-alpha",
                   "classes_per_client": "classes-per-client"}


def _person_units(cfg: RunConfig, store: FaceStore, pool: np.ndarray, unit: np.ndarray, labels: np.ndarray,
                  groups: np.ndarray | None, num_partitions: int) -> PersonUnits:
    """privacy-unit=person: the pool's persons, each one indivisible unit (fer_models/data/person_split.py)."""
    subjects = store.meta.get("subject")
    return person_units(subjects=None if subjects is None else np.asarray(subjects)[pool], unit=unit, labels=labels,
                        groups=groups if cfg.partition == "group" else None, num_clients=num_partitions)


@functools.lru_cache(maxsize=8)
def _partition(cfg: RunConfig, num_partitions: int) -> tuple[np.ndarray, ...]:
    store = load_store(cfg)
    pool = train_pool(cfg, store)
    unit, first = _units(cfg, store, pool)
    labels = store.labels[torch.from_numpy(pool[first])].numpy()
    groups = store.meta.get("group")
    groups = None if groups is None else groups[pool[first]]
    persons = None
    try:
        if cfg.privacy_unit == "person":  # split persons, not images: a person sits at one client
            persons = _person_units(cfg, store, pool, unit, labels, groups, num_partitions)
            unit, labels, groups = persons.unit, persons.labels, persons.groups
        partitioner = make_partitioner(name=cfg.partition, num_partitions=num_partitions, seed=cfg.seed,
                                       min_size=cfg.min_client_samples, alpha=cfg.dirichlet_alpha,
                                       classes_per_client=cfg.classes_per_client)
        parts = partitioner.partition(labels, groups=groups)
    except PartitionError as exc:
        text = re.sub(r"\b(" + "|".join(_PARTITION_KEYS) + r")\b", lambda m: _PARTITION_KEYS[m.group(1)], str(exc))
        if persons is not None and not isinstance(exc, PersonSplitError):
            text = in_persons(text)
        raise type(exc)(f"partition={cfg.partition} of {len(pool)} training samples: {text}") from None
    shares = tuple(np.sort(pool[np.isin(unit, p)]) for p in parts)
    if persons is not None and "subject" in store.meta:  # by construction; checked since the epsilon relies on it
        subjects = np.asarray(store.meta["subject"])
        check_one_client_per_person(holdings={f"client {i}": subjects[s] for i, s in enumerate(shares)},
                                    advice="this is a bug in fedfer's partitioning: please report it")
    return shares


def client_partitions(cfg: RunConfig, *, num_partitions: int) -> tuple[np.ndarray, ...]:
    """Store indices held by each client (deterministic for the config's seed)."""
    return _partition(cfg, num_partitions)


def client_data(cfg: RunConfig, *, partition_id: int, num_partitions: int) -> ClipSet:
    """The training samples of one client."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id {partition_id} outside 0..{num_partitions - 1}")
    store = load_store(cfg)
    clips = clips_for(cfg, store, client_partitions(cfg, num_partitions=num_partitions)[partition_id], training=True,
                      seed=(partition_id,))
    if cfg.audit_canaries:  # issue 17: audit canaries planted in this client's data (fer_models/audit/canaries.py)
        plan = canary_plan_for(cfg=cfg, store=store, pool=train_pool(cfg, store), num_clients=num_partitions)
        clips = with_canaries(clips, plan=plan, partition_id=partition_id)
    return clips


def clips_for(cfg: RunConfig, store: FaceStore, indices: np.ndarray, *, training: bool = False,
              seed: tuple[int, ...] = ()) -> ClipSet:
    """Samples made of the given images: real sequences, pseudo-clips or single frames (clip-source). Real
    sequences are sampled the clip-sampling way (random windows for training only: held-out clips are the
    last T frames) and short ones padded or refused (clip-short)."""
    sampling = cfg.clip_sampling if training or cfg.clip_sampling != "random" else "last"
    return make_clips(store, np.asarray(indices), clip_length=cfg.clip_length, clip_source=cfg.clip_source,
                      sampling=sampling, short=cfg.clip_short, seed=(cfg.seed, *seed))


def eval_splits(cfg: RunConfig, store: FaceStore) -> dict[str, ClipSet]:
    """Held-out splits the server evaluates on: ``val`` (PublicTest) and ``test`` (PrivateTest)."""
    return {s: clips_for(cfg, store, store.indices(s)) for s in ("val", "test") if store.has_split(s)}


def evaluate_state(cfg: RunConfig, store: FaceStore, indices: np.ndarray,
                   state: dict[str, torch.Tensor]) -> "engine.EvalResult":  # noqa: F821  (imported inside: training is loaded lazily)
    """The configured model with weights ``state``, evaluated on the given images of ``store`` (this process's
    threads and device)."""
    from fer_models.training import engine
    engine.configure_threads(cfg.num_cpus)
    device = engine.select_device()
    model = build_model(cfg, image_size=store.image_size[0])
    model.load_state_dict(state)
    return engine.evaluate(model=model.to(device), data=clips_for(cfg, store, indices),
                           batch_size=cfg.eval_batch_size, device=device)


def sample_groups(store: FaceStore, clips: ClipSet) -> np.ndarray | None:
    """The group (dataset) of each sample of ``clips`` (that of its first frame), or None without groups."""
    groups = store.meta.get("group")
    return None if groups is None else groups[clips.frames[:, 0].numpy()]


def report_split(cfg: RunConfig, store: FaceStore) -> str:
    """The split whose accuracy is reported: ``test`` when present, else ``val``."""
    if store.has_split("test"):
        return "test"
    if store.has_split("val"):
        return "val"
    raise ValueError(f"{store.name}: no held-out split (test or val) to evaluate on; "
                     f"put test images under test/ or use the CSV's PrivateTest rows")
