"""A client's privacy ledger kept in its Flower ``Context.state`` across all rounds.

The ledger (accountant history) and the noise multiplier fixed at the client's first round are
stored as a ConfigRecord, so every round's epsilon is the composition over every local step the
client ever took, in simulation and on a real SuperNode alike.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context

from fer_models.privacy import PrivacyLedger

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
