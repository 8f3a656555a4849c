"""The site ledger: everything a node's data ever spent, over every run and lineage, in the node's state dir.

A lineage ledger (client/ledger.py) belongs to one run lineage, which the server draws: a new
lineage would start at epsilon 0 on the same data. The site ledger belongs to the *data*: it is
keyed by the data's identity (:func:`image_digests`: the multiset of its image bytes, so the same
images reached through another path, folder copy, split, label file, run config or lineage are the
same data) and records every lineage's history on it (``state-dir/sites/<identity>.json``, with the
images' 64-bit digests beside it in ``<identity>.npy``).

The epsilon checked against the node's ``epsilon-cap`` is the RDP composition of the concatenated
histories of every site ledger that shares an image with this data (:func:`compose`). That is a
valid upper bound on what any one image (or person) of it spent: the runs are mechanisms applied
to the same data one after another, each one's input chosen from what earlier ones released (the
server's next global model), and RDP composes under exactly this adaptive sequential composition:
the RDP of the sequence at each order is at most the sum of the RDP of its mechanisms, whatever
accountant each run reported with ((sigma, q, steps) describes the Poisson-subsampled Gaussian
mechanism, whose RDP curve the RDP accountant bounds). Runs on data sharing only part of its images
are counted in full: an over-count, never an under-count.

A round is *reserved* (its projected history written) under the node's lock before any gradient
is computed, so two lineages training the same data at once cannot both pass the cap; the lineage
ledger's history replaces the reservation after the round.

Fail closed: the node marker ``state-dir/fedfer-node.json`` lists every data identity the node
trained on. A site ledger that the marker (or the running SuperNode's ``Context.state``) names but
that is gone refuses training (:class:`~client.ledger.LedgerMissing`); so does a node with an
``epsilon-cap`` whose state dir holds no marker at all (the whole folder lost), unless its node
config says ``privacy-state=new`` (client/node_privacy.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from flwr.app import ConfigRecord, Context

from client.ledger import STATE_DIR_ENV, LedgerMissing, state_dir
from client.node_privacy import NodePrivacy
from fer_models.common.atomic import atomic_write_bytes, atomic_write_json
from fer_models.federation.sites import PRIVACY_STATE, LocalData
from fer_models.privacy.dp_sgd import HistoryEntry, PrivacyLedger

try:  # POSIX: a node-wide lock around check-and-reserve
    import fcntl
except ImportError:  # pragma: no cover - Windows: no concurrent clients on one state dir there
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

FORMAT = "fedfer-site-ledger-v1"
MARKER_FORMAT = "fedfer-node-v1"
MARKER_NAME = "fedfer-node.json"
STATE_KEY = "fedfer-site-ledger"
_DIGESTS: "weakref.WeakKeyDictionary[object, np.ndarray]" = weakref.WeakKeyDictionary()


def image_digests(local: LocalData) -> np.ndarray:
    """Sorted unique 64-bit digests of the images this client's data holds: a site's whole store (whatever
    the run trains of it), a partition's own samples. Only pixel bytes enter: not paths, labels or splits."""
    store = local.store
    if local.site is not None:
        images = store.images
    else:
        images = local.train.images[torch.unique(local.train.frames.reshape(-1))]
    cached = _DIGESTS.get(store) if local.site is not None else None
    if cached is not None:
        return cached
    rows = images.reshape(images.shape[0], -1).numpy()
    digests = np.unique(np.fromiter((int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8).digest(), "little")
                                     for r in rows), dtype=np.uint64, count=len(rows)))
    if local.site is not None:
        _DIGESTS[store] = digests
    return digests


def identity_of(digests: np.ndarray) -> str:
    """The data's identity: SHA-256 over its sorted image digests."""
    return hashlib.sha256(np.ascontiguousarray(digests, dtype="<u8").tobytes()).hexdigest()


def compose(histories: list[tuple[HistoryEntry, ...]], *, delta: float) -> float:
    """Epsilon at ``delta`` of the RDP accountant over the concatenated histories (see the module docstring)."""
    return PrivacyLedger("rdp", tuple(h for history in histories for h in history)).epsilon(delta=delta)


@dataclass(frozen=True)
class SiteLedger:
    """The site ledger of one data identity in one node's state dir."""

    root: Path
    identity: str
    digests: np.ndarray

    @classmethod
    def locate(cls, context: Context, local: LocalData) -> "SiteLedger":
        digests = image_digests(local)
        return cls(state_dir(context), identity_of(digests), digests)

    @property
    def path(self) -> Path:
        return self.root / "sites" / f"{self.identity[:32]}.json"

    @property
    def marker(self) -> Path:
        return self.root / MARKER_NAME

    # --- reading -------------------------------------------------------------------------------------------
    def _read(self, path: Path) -> dict:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT or not isinstance(data.get("lineages"), dict):
                raise ValueError(f"not a {FORMAT} file")
            return data
        except (OSError, ValueError) as exc:
            raise LedgerMissing(f"site ledger {path} is unreadable ({exc}): this node refuses to train until it is "
                                f"restored from a backup of {self.root}") from None

    def _marker_identities(self) -> list[str] | None:
        if not self.marker.exists():
            return None
        try:
            data = json.loads(self.marker.read_text(encoding="utf-8"))
            return [str(i) for i in data["data"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LedgerMissing(f"node marker {self.marker} is unreadable ({exc}): restore it from a backup of "
                                f"{self.root}") from None

    def entries(self) -> dict[str, dict]:
        """This data's lineage entries ({} before its first round)."""
        return self._read(self.path)["lineages"] if self.path.exists() else {}

    def overlapping_histories(self, *, without: str = "") -> list[tuple[HistoryEntry, ...]]:
        """The histories of every site ledger (this one included, less its entry ``without``) whose data shares an
        image with this data."""
        out = []
        for path in sorted((self.root / "sites").glob("*.json")):
            mine = path == self.path
            if not mine:
                sidecar = path.with_suffix(".npy")
                if not sidecar.exists() or not np.intersect1d(np.load(sidecar), self.digests).size:
                    continue
            for key, entry in self._read(path)["lineages"].items():
                if not (mine and key == without):
                    out.append(_history(entry))
        return out

    # --- fail closed ---------------------------------------------------------------------------------------
    def check_state(self, context: Context, privacy: NodePrivacy) -> None:
        """Refuse (LedgerMissing) when this node's privacy state should be here but is not: call before training."""
        known = self._marker_identities()
        record = context.state.config_records.get(STATE_KEY)
        in_state = record is not None and self.identity in list(record.get("data", []))  # type: ignore[arg-type]
        how = (f"restore {self.root} from a backup (or point state-dir / ${STATE_DIR_ENV} at the folder that holds "
               f"it) and rejoin")
        if not self.path.exists() and (in_state or (known is not None and self.identity in known)):
            raise LedgerMissing(f"this node trained on this data before (data identity {self.identity[:16]}), but "
                                f"its site ledger {self.path} is missing: it refuses to train, since the data's "
                                f"epsilon would restart from 0; {how}")
        if known is None and privacy.epsilon_cap is not None:
            if not privacy.start_new_state:
                raise LedgerMissing(
                    f"this node has an epsilon-cap, but its state dir {self.root} holds no privacy state ("
                    f"{MARKER_NAME} is missing): if the folder was lost, {how}; if this node has never trained, "
                    f"start it once with {PRIVACY_STATE}=new in its node config (then remove it)")
            logger.warning("%s=new: starting this node's privacy state in %s", PRIVACY_STATE, self.root)
        elif known is not None and privacy.start_new_state:
            logger.warning("%s=new is set but %s already holds this node's privacy state: remove %s=new from the "
                           "node config (while it is set, a lost state dir would restart at epsilon 0)",
                           PRIVACY_STATE, self.root, PRIVACY_STATE)

    # --- writing -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the node-wide lock (between processes of the same state dir)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".fedfer-node.lock", "a+b") as handle:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(handle, fcntl.LOCK_UN)

    def write(self, context: Context, *, entry: str, ledger: PrivacyLedger) -> None:
        """Record ``entry``'s (lineage--client) whole history on this data; call under :meth:`locked`."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        known = self._marker_identities() or []
        if self.identity not in known:  # the marker first: a lost site ledger is then noticed
            atomic_write_json(self.marker, {"format": MARKER_FORMAT, "data": [*known, self.identity]})
        sidecar = self.path.with_suffix(".npy")
        if not sidecar.exists():
            buf = io.BytesIO()
            np.save(buf, self.digests)
            atomic_write_bytes(sidecar, buf.getvalue())
        lineages = self.entries()
        lineages[entry] = {"accountant": ledger.accountant,
                           "history": [[float(n), float(q), int(s)] for n, q, s in ledger.history]}
        atomic_write_json(self.path, {"format": FORMAT, "data": self.identity, "lineages": lineages})
        known_here = list(context.state.config_records.get(STATE_KEY, ConfigRecord({"data": []})).get("data", []))
        if self.identity not in known_here:
            context.state[STATE_KEY] = ConfigRecord({"data": [*known_here, self.identity]})  # type: ignore[list-item]

    def reserve(self, context: Context, *, entry: str, projected: PrivacyLedger, cap: float | None,
                delta: float) -> tuple[float, float]:
        """Under the lock: (epsilon of the data so far, epsilon with ``projected`` in place of ``entry``'s history);
        the projected history is written only when no cap is set or the second stays within it."""
        with self.locked():
            if cap is None:  # kept for a cap set later; nothing to compose now
                self.write(context, entry=entry, ledger=projected)
                return 0.0, 0.0
            others = self.overlapping_histories(without=entry)
            before = compose(others + [_history(self.entries().get(entry, {"history": []}))], delta=delta)
            after = compose(others + [projected.history], delta=delta)
            if after <= cap + 1e-9:
                self.write(context, entry=entry, ledger=projected)
            return before, after


def _history(entry: dict) -> tuple[HistoryEntry, ...]:
    return tuple((float(n), float(q), int(s)) for n, q, s in entry["history"])
