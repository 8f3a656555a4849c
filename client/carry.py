"""The optimizer state a client keeps in its Flower ``Context.state`` between rounds
(``optimizer-state = client``): momentum no longer restarts every round. The tensors come from and go
to :func:`fer_models.training.local_round.local_round` (``optimizer_state`` in, ``LocalRound.optimizer_state`` out)."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context

STATE_KEY = "fedfer-optimizer"


def carried_state(context: Context) -> dict[str, torch.Tensor] | None:
    """The optimizer state kept from this client's previous round, or None."""
    record = context.state.array_records.get(STATE_KEY)
    return None if record is None else record.to_torch_state_dict()


def keep_state(context: Context, tensors: dict[str, torch.Tensor] | None) -> None:
    """Store an optimizer's state for this client's next round (replacing the previous one); nothing if empty."""
    if tensors:
        context.state[STATE_KEY] = ArrayRecord(tensors)
