"""A client's privacy ledger, kept durably on its own node for the whole federation.

The accountant history (and the noise multiplier fixed at the client's first round) lives in a
JSON file in the node's state directory, written atomically before the reply leaves. A restarted
SuperNode therefore continues its epsilon, and a resumed run continues every client's ledger:
the server never holds, sends or restores a client's ledger.

The file belongs to one *lineage* (a random id the server draws at the start of a run and keeps
across resumes) and one client. The ledger fails closed: a client that has trained in a lineage
before (its Flower ``Context.state`` says so, or the participation marker beside the ledger
exists, or the node's site ledger records this lineage) but finds no ledger refuses to train, with
the way to restore it. What the node's *data* spent over every lineage is the site ledger's
(client/site_ledger.py).

State directory: the node config's ``state-dir`` (a SuperNode's ``--node-config``), else
``$FEDFER_STATE_DIR``, else ``$XDG_STATE_HOME/fedfer`` (``~/.local/state/fedfer``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context

from fer_models.common.atomic import atomic_write_bytes, atomic_write_json
from fer_models.federation.wire import LINEAGE
from fer_models.privacy.dp_sgd import PrivacyLedger

logger = logging.getLogger(__name__)

STATE_KEY = "fedfer-privacy"
STATE_DIR_KEY = "state-dir"
STATE_DIR_ENV = "FEDFER_STATE_DIR"
FORMAT = "fedfer-ledger-v1"


class LedgerMissing(RuntimeError):
    """This client trained in this lineage before, but its ledger is gone: it must not train again."""


class LedgerMismatch(RuntimeError):
    """The stored ledger does not belong to this run's settings (accountant, lineage)."""


def state_dir(context: Context) -> Path:
    """The node's state folder (node config ``state-dir``, ``$FEDFER_STATE_DIR``, or the XDG default)."""
    configured = context.node_config.get(STATE_DIR_KEY) or os.environ.get(STATE_DIR_ENV)
    if configured:
        return Path(str(configured)).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "fedfer"


@dataclass(frozen=True)
class LedgerFile:
    """Where one client's ledger of one lineage lives, with its participation marker."""

    path: Path
    marker: Path
    lineage: str
    client: str

    @classmethod
    def locate(cls, context: Context, *, lineage: str, client: str) -> "LedgerFile":
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{lineage}--{client}")
        folder = state_dir(context) / "ledgers"
        return cls(folder / f"{safe}.json", folder / f"{safe}.trained", lineage, client)

    def _trained_before(self, context: Context) -> bool:
        record = context.state.config_records.get(STATE_KEY)
        in_state = record is not None and record.get("lineage") == self.lineage and bool(record.get("trained"))
        return in_state or self.marker.exists()

    def load(self, context: Context, *, accountant: str,
             recorded_elsewhere: bool = False) -> tuple[PrivacyLedger, float | None]:
        """The ledger so far and the fixed noise multiplier (None before the first round). ``recorded_elsewhere``:
        the site ledger (client/site_ledger.py) holds this lineage's history, so a missing file is a lost one."""
        if not self.path.exists():
            if recorded_elsewhere or self._trained_before(context):
                raise LedgerMissing(
                    f"client {self.client} has trained in run lineage {self.lineage} before, but its privacy "
                    f"ledger {self.path} is missing: it refuses to train, since its epsilon would restart "
                    f"from 0. Restore the file from a backup of {self.path.parent} (or point state-dir / "
                    f"${STATE_DIR_ENV} at the folder that holds it) and rejoin")
            return PrivacyLedger(accountant, ()), None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            history = tuple((float(n), float(q), int(s)) for n, q, s in data["history"])
            stored = str(data["accountant"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LedgerMissing(f"client {self.client}: privacy ledger {self.path} is unreadable ({exc}); it "
                                f"refuses to train until the file is restored from a backup") from None
        if stored != accountant:
            raise LedgerMismatch(f"client {self.client}: its ledger {self.path} was kept with accountant={stored!r}, "
                                 f"the run now asks for {accountant!r}: keep one accountant for the whole run")
        noise = data.get("noise-multiplier")
        return PrivacyLedger(accountant, history), None if noise is None else float(noise)

    def save(self, context: Context, ledger: PrivacyLedger, *, noise_multiplier: float,
             unit: str, delta: float) -> None:
        """Write the ledger atomically (and the participation marker first): call before replying."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.marker.exists():
            atomic_write_bytes(self.marker, f"{self.lineage} {self.client}\n".encode())
        atomic_write_json(self.path, {
            "format": FORMAT, "lineage": self.lineage, "client": self.client, "accountant": ledger.accountant,
            "unit": unit, "delta": delta, "epsilon": ledger.epsilon(delta=delta),
            "noise-multiplier": float(noise_multiplier),
            "history": [[float(n), float(q), int(s)] for n, q, s in ledger.history]})
        context.state[STATE_KEY] = ConfigRecord({"lineage": self.lineage, "trained": True})


def check_lineage(context: Context, lineage: str) -> None:
    """Refuse a lineage that changes within one Flower run (a ledger must not be swapped mid-run)."""
    record = context.state.config_records.get(STATE_KEY)
    if record is not None and record.get("lineage") not in (None, lineage):
        raise LedgerMismatch(f"the server switched the run lineage from {record.get('lineage')!r} to {lineage!r} "
                             f"within one run: this client keeps its ledger and refuses to train")


def lineage_of(config: Any, context: Context) -> str:
    """The run lineage the server sent (``fedfer-lineage``), else one derived from the Flower run id."""
    value = config.get(LINEAGE) if config is not None else None
    return str(value) if value else f"run{context.run_id}"
