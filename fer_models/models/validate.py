"""Refuse models that Opacus cannot train privately, naming the offending layers.

The model is never changed (no ``ModuleValidator.fix``): the caller must build a compatible one.
Training/eval mode is not checked here (it is a runtime state, not a structural property).
"""

from __future__ import annotations

import logging

from opacus.grad_sample import GradSampleModule
from opacus.layers.dp_rnn import DPRNNBase
from opacus.validators import ModuleValidator
from opacus.validators.errors import IllegalModuleConfigurationError
from torch import nn

logger = logging.getLogger(__name__)

_HINTS: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.modules.batchnorm._BatchNorm, "use GroupNorm (BatchNorm mixes samples of a batch)"),
    (nn.modules.instancenorm._InstanceNorm, "use GroupNorm (no running statistics)"),
    (nn.RNNBase, "use opacus.layers.DPGRU/DPLSTM (batch_first=True)"),
    (nn.MultiheadAttention, "use opacus.layers.DPMultiheadAttention"),
)


class PrivacyIncompatibleModelError(ValueError):
    """A model with layers Opacus cannot compute correct per-sample gradients for."""


def _hint(module: nn.Module) -> str | None:
    for cls, hint in _HINTS:
        if isinstance(module, cls):
            return hint
    return None


def _has_own_trainable_params(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters(recurse=False))


def _problems(model: nn.Module) -> list[str]:
    problems: list[str] = []
    # 1. Opacus' own validators (BatchNorm, nn.LSTM/nn.GRU, MultiheadAttention, ...), per layer
    #    so that each message can name the module path.
    for path, module in model.named_modules():
        name = path or "<root>"
        kind = type(module).__name__
        hint = _hint(module)
        validator = ModuleValidator.VALIDATORS.get(type(module))
        opacus_errors = validator(module) if validator and _has_own_trainable_params(module) else []
        if hint is not None:  # refused even when frozen: running stats / cuDNN RNN are not per-sample
            problems.append(f"{name}: {kind} — {hint}")
        elif opacus_errors:
            problems.extend(f"{name}: {kind} — {err}" for err in opacus_errors)
        elif getattr(module, "inplace", False) is True:
            problems.append(f"{name}: {kind}(inplace=True) — use inplace=False (breaks Opacus backward hooks)")
        elif (
            _has_own_trainable_params(module)
            and type(module) not in GradSampleModule.GRAD_SAMPLERS
            and not isinstance(module, DPRNNBase)  # its parameters are aliases of RNNLinear weights
        ):
            own = ", ".join(n for n, p in module.named_parameters(recurse=False) if p.requires_grad)
            problems.append(
                f"{name}: {kind} — has its own trainable parameter(s) ({own}) but no Opacus grad "
                "sampler; keep learnable parameters inside Linear/Conv/GroupNorm/LayerNorm/Embedding "
                "or opacus DPGRU/DPLSTM layers"
            )
    # 2. Whole-model validation, as Opacus' PrivacyEngine would run it: a safety net for
    #    anything the per-layer pass above does not know about.
    if not problems:
        for err in ModuleValidator.validate(model, strict=False):
            if isinstance(err, IllegalModuleConfigurationError) and "training mode" in str(err):
                continue
            problems.append(f"<model>: {err}")
    return problems


def check_private_compatible(model: nn.Module) -> None:
    """Raise :class:`PrivacyIncompatibleModelError` listing every layer Opacus cannot handle."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    problems = _problems(model)
    if problems:
        raise PrivacyIncompatibleModelError(
            f"{type(model).__name__} cannot be trained with Opacus differential privacy; fix these "
            "layers (the model is never changed automatically):\n  " + "\n  ".join(problems)
        )
    logger.debug("%s is compatible with Opacus", type(model).__name__)
