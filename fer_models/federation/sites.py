"""What data a client holds: one partition of the run's dataset, or its own site's data (``client-data``).

With ``client-data=site`` a client reads nothing of the run's data: its SuperNode's node config
names the site's data (:data:`NODE_KEYS`), and the client trains on that data's training split,
whole, and evaluates on its held-out split (``test``, else ``val``). In simulation the virtual
node of client ``i`` gets the node config a real site would have, built from the ``i``-th
``name=path`` of the run's ``data-path`` (:func:`simulated_site_config`), so simulation and
deployment run the same client code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from fer_models.common.labels import IMAGE_SIDE, NUM_CLASSES
from fer_models.config import RunConfig
from fer_models.data import DatasetError, FaceStore, load_dataset
from fer_models.data.face_crop import FACE_CROPS
from fer_models.data.loading import DATA_FORMATS, FORMATS_HELP, parse_data_paths
from fer_models.data.samples import ClipSet
from fer_models.federation.task import client_data, clips_for, load_store, train_pool
from fer_models.federation.wire import NODE_PARTITION_ID, NUM_PARTITIONS

logger = logging.getLogger(__name__)

#: Node config keys of a site's SuperNode (``--node-config``): its data and what it agrees to share.
DATA_PATH, DATA_FORMAT, SITE, FACE_CROP, SHARE_EVALUATION = (
    "data-path", "data-format", "site", "face-crop", "share-evaluation")
NODE_KEYS = (DATA_PATH, DATA_FORMAT, SITE, FACE_CROP, SHARE_EVALUATION)
#: Node config keys of the node's own privacy limits, which hold whatever the server's run config says
#: (client/site_ledger.py): the most epsilon this node's data may ever spend over every run and lineage, the delta
#: it is measured at, the least noise multiplier it accepts, a person count it declares public (privacy-unit=person)
#: and ``privacy-state=new`` to start a capped node's privacy state explicitly. A simulated node (whose node config
#: Flower fills) reads them from ``$FEDFER_<KEY>`` (upper case, ``-`` as ``_``), e.g. ``FEDFER_EPSILON_CAP=8``.
EPSILON_CAP, EPSILON_CAP_DELTA, MIN_NOISE_MULTIPLIER, PUBLIC_PERSON_COUNT, PRIVACY_STATE = (
    "epsilon-cap", "epsilon-cap-delta", "min-noise-multiplier", "public-person-count", "privacy-state")
NODE_PRIVACY_KEYS = (EPSILON_CAP, EPSILON_CAP_DELTA, MIN_NOISE_MULTIPLIER, PUBLIC_PERSON_COUNT, PRIVACY_STATE)
_TRUE = ("true", "1", "yes", "on")


class SiteDataError(DatasetError):
    """A site's data cannot be used: its node config, path, images or labels (the message names them)."""


@dataclass(frozen=True)
class SiteSpec:
    """A site's data as its node config names it."""

    name: str
    data_path: str
    data_format: str = "auto"
    face_crop: str = "auto"
    share_evaluation: bool = False

    @classmethod
    def from_node_config(cls, node: Mapping[str, Any]) -> "SiteSpec":
        path = str(node.get(DATA_PATH, "")).strip()
        if not path:
            raise SiteDataError(f"client-data=site: this SuperNode's node config has no {DATA_PATH}; start it with "
                                f"--node-config \"{DATA_PATH}='/path/to/site/data' {SITE}=<name>\"")
        name = str(node.get(SITE, "")).strip() or _default_name(path)
        fmt, crop = str(node.get(DATA_FORMAT, "auto")), str(node.get(FACE_CROP, "auto"))
        for key, value, allowed in ((DATA_FORMAT, fmt, DATA_FORMATS[:-1]), (FACE_CROP, crop, FACE_CROPS)):
            if value not in allowed:
                raise SiteDataError(f"site {name}: node config {key}={value!r}: expected one of {', '.join(allowed)}")
        share = node.get(SHARE_EVALUATION, False)
        return cls(name=name, data_path=path, data_format=fmt, face_crop=crop,
                   share_evaluation=share is True or str(share).lower() in _TRUE)

    def node_config(self) -> dict[str, str | bool]:
        """The node config entries that name this site (what deploy-local gives its SuperNode)."""
        return {DATA_PATH: self.data_path, DATA_FORMAT: self.data_format, SITE: self.name,
                FACE_CROP: self.face_crop, SHARE_EVALUATION: self.share_evaluation}


def _default_name(path: str) -> str:
    p = Path(path)
    return (p.stem if p.suffix else p.name) or "site"


def simulated_site_config(cfg: RunConfig, *, partition_id: int) -> dict[str, str | bool]:
    """The node config of virtual client ``partition_id``: the ``partition_id``-th ``name=path`` of data-path.

    The operator of a simulation holds every site, so the virtual sites share their evaluation counts."""
    pairs = parse_data_paths(cfg.data_path) if cfg.data_path else []
    if len(pairs) != cfg.num_clients:
        raise SiteDataError(f"client-data=site in simulation: data-path lists {len(pairs)} site(s) as name=path but "
                            f"num-clients={cfg.num_clients}; give one name=path per virtual client")
    name, path = pairs[partition_id]
    return SiteSpec(name=name, data_path=path, face_crop=cfg.face_crop, share_evaluation=True).node_config()


@dataclass(frozen=True)
class LocalData:
    """One client's data: its store, its training samples and (for a site) its held-out split."""

    store: FaceStore
    train: ClipSet
    key: str  # names the client's privacy-ledger file: "p0-of-4" or "site-ckplus"
    name: str  # for messages: "client 0" or "site ckplus"
    held_out: str | None = None  # split a site evaluates on; None for a partition
    site: SiteSpec | None = None


def partition_data(cfg: RunConfig, *, partition_id: int, num_partitions: int) -> LocalData:
    """Partition ``partition_id`` of the run's dataset (client-data=partition)."""
    return LocalData(store=load_store(cfg), train=client_data(cfg, partition_id=partition_id,
                                                              num_partitions=num_partitions),
                     key=f"p{partition_id}-of-{num_partitions}", name=f"client {partition_id}")


def site_data(cfg: RunConfig, spec: SiteSpec) -> LocalData:
    """The site's own data: its training split whole (capped by max-train-samples), its held-out split."""
    if not Path(spec.data_path).expanduser().exists():
        raise SiteDataError(f"site {spec.name}: data-path {spec.data_path} does not exist on this SuperNode; give its "
                            f"node config the path of the site's data ({FORMATS_HELP})")
    try:
        store = load_dataset(data_path=spec.data_path, data_format=spec.data_format, cache_dir=cfg.cache_dir,
                             seed=cfg.seed, face_crop=spec.face_crop)
    except DatasetError as exc:
        raise SiteDataError(f"site {spec.name}: {exc}") from None
    if store.image_size != (IMAGE_SIDE, IMAGE_SIDE):
        h, w = store.image_size
        raise SiteDataError(f"site {spec.name}: {spec.data_path} holds {w}x{h} images; the federation's model takes "
                            f"{IMAGE_SIDE}x{IMAGE_SIDE} faces: list the photos in a manifest CSV (face-crop crops "
                            f"and resizes them)")
    idx = train_pool(cfg, store)
    if len(idx) == 0:
        raise SiteDataError(f"site {spec.name}: {spec.data_path} has no training images (its train split is empty); "
                            f"put images under train/ or give the manifest a split column with train rows")
    held_out = "test" if store.has_split("test") else "val" if store.has_split("val") else None
    missing = sorted(set(range(NUM_CLASSES)) - set(np.unique(store.labels[torch.from_numpy(idx)].numpy()).tolist()))
    if missing:
        logger.info("site %s: no training images of class(es) %s (fine: the others train)", spec.name, missing)
    return LocalData(store=store, train=clips_for(cfg, store, np.sort(idx), training=True), key=f"site-{spec.name}",
                     name=f"site {spec.name}", held_out=held_out, site=spec)


def local_data(cfg: RunConfig, node_config: Mapping[str, Any]) -> LocalData:
    """This client's data under ``client-data``, from its node config (Flower's ``context.node_config``)."""
    if cfg.client_data == "site":
        if DATA_PATH not in node_config and NODE_PARTITION_ID in node_config and cfg.data_path:
            node_config = {**node_config, **simulated_site_config(cfg, partition_id=int(node_config[NODE_PARTITION_ID]))}
        return site_data(cfg, SiteSpec.from_node_config(node_config))
    if NODE_PARTITION_ID not in node_config:
        raise KeyError(f"node config has no '{NODE_PARTITION_ID}': start the SuperNode with --node-config "
                       "\"partition-id=<i> num-partitions=<n>\", or run with client-data=site and give it its "
                       "own data-path")
    return partition_data(cfg, partition_id=int(node_config[NODE_PARTITION_ID]),
                          num_partitions=int(node_config.get(NUM_PARTITIONS, cfg.num_clients)))
