"""The optimizer state a client keeps in its Flower ``Context.state`` between rounds
(``optimizer-state = client``): momentum no longer restarts every round."""

from __future__ import annotations

import logging

import torch
from flwr.app import ArrayRecord, Context

from fer_models.training.optim_state import load_optimizer_state, optimizer_state_tensors

logger = logging.getLogger(__name__)

STATE_KEY = "fedfer-optimizer"


def restore_optimizer(context: Context, optimizer: torch.optim.Optimizer) -> bool:
    """Load the state kept from this client's previous round into ``optimizer``; False if none fits."""
    record = context.state.array_records.get(STATE_KEY)
    if record is None:
        return False
    return load_optimizer_state(optimizer, record.to_torch_state_dict())


def keep_optimizer(context: Context, optimizer: torch.optim.Optimizer) -> None:
    """Store ``optimizer``'s state for this client's next round (replacing the previous one)."""
    tensors = optimizer_state_tensors(optimizer)
    if tensors:
        context.state[STATE_KEY] = ArrayRecord(tensors)
