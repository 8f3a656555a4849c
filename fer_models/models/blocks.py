"""Opacus-safe building blocks shared by every fedfer model.

Every block keeps the batch dimension ``B`` first and intact: frames are never folded into the
batch, so Opacus' per-sample gradients (computed per layer from the layer input's first
dimension) are per *clip*, not per frame. Time-distributed convolutions are ``nn.Conv3d`` with a
``(1, k, k)`` kernel on ``(B, C, T, H, W)``; normalisation is a per-frame GroupNorm (never BatchNorm);
activations are never in-place.

Normalisation is :class:`~fer_models.models.frame_norm.FrameGroupNorm`: each channel group of
*each frame* is normalised over its own ``(C/G, H, W)``, so a frame's embedding never depends on
the clip's other frames (a plain ``nn.GroupNorm`` on ``(B, C, T, H, W)`` would share statistics
over ``T``). Same parameters and state dict as ``nn.GroupNorm``; identical output for ``T = 1``.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from fer_models.common.labels import NUM_CLASSES
from fer_models.models.frame_norm import FrameGroupNorm


class InvalidClipError(ValueError):
    """A model input that is not a float clip batch of shape ``(B, T, C, H, W)``."""


class FerModel(nn.Module):
    """Base class of registered models: input checks and parameter counts.

    Subclasses set ``DEFAULT_PARAM_COUNT`` (parameters at default settings, also quoted in the
    class docstring; a test keeps the three in sync).
    """

    DEFAULT_PARAM_COUNT: ClassVar[int] = 0

    def __init__(self, *, num_classes: int, image_size: int, in_channels: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (got {num_classes}); fedfer uses {NUM_CLASSES}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1 (got {in_channels})")
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive int (got {image_size!r}); FER2013 uses 48")
        self.num_classes = num_classes
        self.image_size = image_size
        self.in_channels = in_channels

    @property
    def param_count(self) -> int:
        """Number of trainable parameters of this instance."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def check_input(self, x: Tensor) -> None:
        """Raise :class:`InvalidClipError` unless ``x`` is ``(B, T, C, S, S)`` floating point."""
        if not isinstance(x, Tensor) or x.dim() != 5:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise InvalidClipError(
                f"{type(self).__name__} expects clips of shape (B, T, {self.in_channels}, "
                f"{self.image_size}, {self.image_size}), got {shape}; add a time axis with "
                "x.unsqueeze(1) for static images"
            )
        if not x.is_floating_point():
            raise InvalidClipError(f"expected a floating-point clip batch, got dtype {x.dtype}; call .float()")
        _, t, c, h, w = x.shape
        if t < 1 or c != self.in_channels or (h, w) != (self.image_size, self.image_size):
            raise InvalidClipError(
                f"{type(self).__name__} expects (B, T>=1, {self.in_channels}, {self.image_size}, "
                f"{self.image_size}), got {tuple(x.shape)}; resize the images or create the model "
                "with a matching image_size"
            )


def clip_to_channels_first(x: Tensor) -> Tensor:
    """``(B, T, C, H, W)`` → ``(B, C, T, H, W)`` (the layout of ``nn.Conv3d``), batch kept first."""
    return x.permute(0, 2, 1, 3, 4)


#: Activations the blocks accept: ``tanh`` (a tempered sigmoid) trains better under DP-SGD
#: (Papernot et al. 2021, "Tempered sigmoid activations for deep learning with differential privacy").
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (``relu`` or ``tanh``)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)} (got {name!r})")
    return ACTIVATIONS[name]()


class FrameConvBlock(nn.Module):
    """Per-frame ``Conv3d (1,k,k)`` (+ optional ``(1,2,2)`` pooling) + per-frame ``GroupNorm`` + activation.

    Input and output are ``(B, C, T, H, W)``; frames never mix (neither in the convolution nor in
    the normalisation statistics). Pooling comes
    right after the convolution so that normalisation and activation run on 4x fewer positions
    (about 25% faster on CPU; max-pooling commutes with any monotone activation: ReLU, tanh).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        norm_groups: int = 8,
        pool: str | None = "max",
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1 (got {kernel_size})")
        if out_channels % norm_groups != 0:
            raise ValueError(
                f"out_channels={out_channels} is not divisible by norm_groups={norm_groups}; "
                "pick channels that are multiples of norm_groups"
            )
        if pool not in (None, "max", "avg"):
            raise ValueError(f"pool must be 'max', 'avg' or None (got {pool!r})")
        pad = kernel_size // 2
        self.conv = nn.Conv3d(
            in_channels, out_channels, kernel_size=(1, kernel_size, kernel_size),
            padding=(0, pad, pad), bias=False,
        )
        self.norm = FrameGroupNorm(norm_groups, out_channels)
        self.act = make_activation(activation)
        self.pool: nn.Module
        if pool == "max":
            self.pool = nn.MaxPool3d(kernel_size=(1, 2, 2))
        elif pool == "avg":
            self.pool = nn.AvgPool3d(kernel_size=(1, 2, 2))
        else:
            self.pool = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.pool(self.conv(x))))
