"""What a client's optimizer carries from one round to the next, and the learning rate per round.

Each round a client builds a new optimizer (Flower's examples do the same), so SGD's momentum or
AdamW's moments restart at zero every round. With ``optimizer-state = client`` the client keeps
them: :func:`optimizer_state_tensors` flattens an optimizer's per-parameter state into named
tensors (for Flower's ``Context.state``) and :func:`load_optimizer_state` puts them back into the
next round's fresh optimizer. Under DP the state is built from the already-noised gradients and
never leaves the client: post-processing, no privacy cost.

``lr-schedule`` scales the learning rate by round: ``constant``, or ``cosine`` from the full rate
in round 1 down towards 0 in the last round. Plain PyTorch, no Flower.
"""

from __future__ import annotations

import logging
import math

import torch

logger = logging.getLogger(__name__)

LR_SCHEDULES = ("constant", "cosine")


def lr_factor(*, schedule: str, server_round: int, num_rounds: int) -> float:
    """Multiplier of the base learning rate in ``server_round`` (1-based) of ``num_rounds``."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr-schedule must be one of {', '.join(LR_SCHEDULES)} (got {schedule!r})")
    if schedule == "constant":
        return 1.0
    if num_rounds < 1 or not 1 <= server_round <= num_rounds:
        raise ValueError(f"server_round must lie in 1..num_rounds, got {server_round} of {num_rounds}")
    return 0.5 * (1.0 + math.cos(math.pi * (server_round - 1) / num_rounds))


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state as ``"<param index>.<name>"`` -> tensor (CPU copies)."""
    out: dict[str, torch.Tensor] = {}
    for index, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            out[f"{index}.{name}"] = tensor.detach().cpu().clone()
    return out


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> bool:
    """Put state saved by :func:`optimizer_state_tensors` into ``optimizer`` (keeping its learning
    rate and other settings). Returns False, changing nothing, when the state does not fit the
    optimizer's parameters (another model or optimizer): training then starts from fresh state."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index_text, _, name = key.partition(".")
        if not index_text.isdigit() or not name:
            logger.warning("optimizer state ignored: unexpected entry %r", key)
            return False
        state.setdefault(int(index_text), {})[name] = value
    for index, entries in state.items():
        if index >= len(params):
            logger.warning("optimizer state ignored: it has parameter %d, the model has %d", index, len(params))
            return False
        for name, value in entries.items():
            if value.dim() > 0 and value.shape != params[index].shape:
                logger.warning("optimizer state ignored: %s has shape %s, parameter %d has %s",
                               name, tuple(value.shape), index, tuple(params[index].shape))
                return False
    saved = optimizer.state_dict()
    saved["state"] = state
    optimizer.load_state_dict(saved)
    return True
