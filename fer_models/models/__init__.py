"""fedfer models: plain PyTorch, Opacus-compatible, built by name from a registry.

Importing this package registers ``cnn``, ``cnn_rnn`` and ``cnn_attention``.
"""

import fer_models.models.quiet_opacus  # noqa: F401  (first: Opacus' root log handler off, see that module)
from fer_models.models import cnn, cnn_attention, cnn_rnn  # noqa: F401  (register the models)
from fer_models.models.blocks import FerModel, InvalidClipError
from fer_models.models.registry import (
    ModelOptionError,
    UnknownModelError,
    create_model,
    list_models,
    model_options,
    param_count,
    register_model,
)
from fer_models.models.validate import PrivacyIncompatibleModelError, check_private_compatible

__all__ = [
    "FerModel",
    "InvalidClipError",
    "ModelOptionError",
    "PrivacyIncompatibleModelError",
    "UnknownModelError",
    "check_private_compatible",
    "create_model",
    "list_models",
    "model_options",
    "param_count",
    "register_model",
]
