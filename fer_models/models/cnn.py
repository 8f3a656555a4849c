"""``cnn``: the static baseline (per-frame CNN, frames averaged, linear classifier)."""

from __future__ import annotations

from fer_models.models.encoder_model import FrameCNN
from fer_models.models.registry import register_model


@register_model("cnn")
class CNN(FrameCNN):
    """Static CNN baseline: frame encoder → mean over frames → dropout → Linear.

    At default settings (channels 16-32-64-128, 7 classes) it has 98,295 parameters.
    Options: those of :class:`~fer_models.models.encoder_model.FrameCNN`.
    """

    DEFAULT_PARAM_COUNT = 98_295
