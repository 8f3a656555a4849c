"""A client's privacy ledger kept in its Flower ``Context.state`` across all rounds.

The ledger (accountant history) and the noise multiplier fixed at the client's first round are
stored as a ConfigRecord, so every round's epsilon is the composition over every local step the
client ever took, in simulation and on a real SuperNode alike.
"""

from __future__ import annotations

from typing import Any

from flwr.app import ConfigRecord, Context

from fer_models.privacy import LEDGER_PREFIX, PrivacyLedger, restore_key

STATE_KEY = "fedfer-privacy"


def load_ledger(context: Context, *, accountant: str) -> PrivacyLedger:
    """The ledger stored in this client's state (empty on its first round)."""
    record = context.state.config_records.get(STATE_KEY)
    if record is None or "steps" not in record:
        return PrivacyLedger(accountant, ())
    stored = str(record["accountant"])
    if stored != accountant:
        raise ValueError(f"this client's ledger was kept with accountant={stored!r}, the run now asks "
                         f"for {accountant!r}: keep one accountant for the whole run")
    hist = zip(record["noise"], record["rate"], record["steps"])  # type: ignore[arg-type]
    return PrivacyLedger(accountant, tuple((float(n), float(q), int(s)) for n, q, s in hist))


def save_ledger(context: Context, ledger: PrivacyLedger) -> None:
    """Store the ledger (replacing the old one), keeping the fixed noise multiplier."""
    record = context.state.config_records.get(STATE_KEY) or ConfigRecord()
    record["accountant"] = ledger.accountant
    if ledger.history:
        record["noise"] = [float(n) for n, _, _ in ledger.history]
        record["rate"] = [float(q) for _, q, _ in ledger.history]
        record["steps"] = [int(s) for _, _, s in ledger.history]
    context.state[STATE_KEY] = record


def stored_noise(context: Context) -> float | None:
    """The noise multiplier this client fixed for the whole run, if already computed."""
    record = context.state.config_records.get(STATE_KEY)
    if record is None or "noise-multiplier" not in record:
        return None
    return float(record["noise-multiplier"])  # type: ignore[arg-type]


def store_noise(context: Context, noise_multiplier: float) -> None:
    record = context.state.config_records.get(STATE_KEY) or ConfigRecord()
    record["noise-multiplier"] = float(noise_multiplier)
    context.state[STATE_KEY] = record


# --- the ledger on the wire: clients report it, the server checkpoints it and hands it back ----------
def ledger_metrics(context: Context) -> dict[str, list[float] | list[int] | float]:
    """This client's stored ledger as reply metrics (the server strips them before aggregation)."""
    record = context.state.config_records.get(STATE_KEY)
    if record is None or "steps" not in record:
        return {}
    out: dict[str, list[float] | list[int] | float] = {
        f"{LEDGER_PREFIX}noise": list(record["noise"]), f"{LEDGER_PREFIX}rate": list(record["rate"]),  # type: ignore[arg-type]
        f"{LEDGER_PREFIX}steps": list(record["steps"])}  # type: ignore[arg-type]
    if "noise-multiplier" in record:
        out[f"{LEDGER_PREFIX}noise-multiplier"] = float(record["noise-multiplier"])  # type: ignore[arg-type]
    return out


def restore_if_missing(context: Context, config: Any, *, partition_id: int, accountant: str) -> bool:
    """After a resume the server sends each client's checkpointed ledger; adopt it if state is empty."""
    if STATE_KEY in context.state.config_records or restore_key(partition_id, "steps") not in config:
        return False
    record = ConfigRecord({"accountant": accountant,
                           "noise": [float(x) for x in config[restore_key(partition_id, "noise")]],
                           "rate": [float(x) for x in config[restore_key(partition_id, "rate")]],
                           "steps": [int(x) for x in config[restore_key(partition_id, "steps")]]})
    if restore_key(partition_id, "noise-multiplier") in config:
        record["noise-multiplier"] = float(config[restore_key(partition_id, "noise-multiplier")])
    context.state[STATE_KEY] = record
    return True
