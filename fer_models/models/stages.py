"""The stages of the frame encoder: what each resolution is made of, and the named encoders built from them.

A stage maps ``(B, C, T, H, W)`` to ``(B, C', T, H/2, W/2)`` (no halving when ``pool`` is None), every frame
alone: per-frame convolutions (``Conv3d`` with a ``(1, k, k)`` kernel) and per-frame GroupNorm, the batch
dimension first, so Opacus' per-sample gradients stay per clip.

- ``single``: one conv + pooling + GroupNorm + activation (:class:`FrameConvBlock`; fedfer's small encoder).
- ``double``: two of them, pooling after the second (a VGG stage: Simonyan and Zisserman 2015; the FER2013
  VGG variant of Khaireddin and Chen 2021).
- ``residual``: a basic residual block (He et al. 2016): conv-norm-act-conv-norm plus the input (through a
  1x1 conv and GroupNorm where the width changes), activation, then pooling.

:data:`ENCODERS` names the encoders a run chooses with ``encoder=``: ``small`` (today's 16-32-64-128 single
stages, ~98k parameters in ``cnn``), ``vgg`` and ``resnet`` (32-64-128-256, ~1.2M) and ``resnet-wide``
(64-128-256-512, ~4.9M).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from fer_models.models.blocks import FrameConvBlock, make_activation
from fer_models.models.frame_norm import FrameGroupNorm

STAGES = ("single", "double", "residual")

#: encoder name -> the model options it sets (``channels=None``: the front-end's default widths).
ENCODERS: dict[str, dict[str, Any]] = {
    "small": {"stage": "single", "channels": None},
    "vgg": {"stage": "double", "channels": (32, 64, 128, 256)},
    "resnet": {"stage": "residual", "channels": (32, 64, 128, 256)},
    "resnet-wide": {"stage": "residual", "channels": (64, 128, 256, 512)},
}


def _frame_conv(cin: int, cout: int, kernel_size: int) -> nn.Conv3d:
    pad = kernel_size // 2
    return nn.Conv3d(cin, cout, kernel_size=(1, kernel_size, kernel_size), padding=(0, pad, pad), bias=False)


def _pool(pool: str | None) -> nn.Module:
    if pool == "max":
        return nn.MaxPool3d(kernel_size=(1, 2, 2))
    if pool == "avg":
        return nn.AvgPool3d(kernel_size=(1, 2, 2))
    if pool is None:
        return nn.Identity()
    raise ValueError(f"pool must be 'max', 'avg' or None (got {pool!r})")


class ResidualFrameBlock(nn.Module):
    """``act(norm2(conv2(act(norm1(conv1(x))))) + shortcut(x))``, then pooling; every frame alone.

    ``shortcut`` is the identity when the width is kept, else a 1x1 per-frame conv + GroupNorm. Activations
    are fresh modules (never in-place), as Opacus' hooks need.
    """

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 3, norm_groups: int = 8,
                 pool: str | None = "max", activation: str = "relu") -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1 (got {kernel_size})")
        if out_channels % norm_groups != 0:
            raise ValueError(f"out_channels={out_channels} is not divisible by norm_groups={norm_groups}; "
                             "pick channels that are multiples of norm_groups")
        self.conv1 = _frame_conv(in_channels, out_channels, kernel_size)
        self.norm1 = FrameGroupNorm(norm_groups, out_channels)
        self.act1 = make_activation(activation)
        self.conv2 = _frame_conv(out_channels, out_channels, kernel_size)
        self.norm2 = FrameGroupNorm(norm_groups, out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(_frame_conv(in_channels, out_channels, 1),
                                          FrameGroupNorm(norm_groups, out_channels))
        self.act2 = make_activation(activation)
        self.pool = _pool(pool)

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        return self.pool(self.act2(y + self.shortcut(x)))


def check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)} (got {stage!r})")


def make_stage(stage: str, in_channels: int, out_channels: int, *, kernel_size: int, norm_groups: int,
               pool: str | None, activation: str) -> nn.Module:
    """One stage of the frame encoder (see the module docstring)."""
    check_stage(stage)
    opts = {"kernel_size": kernel_size, "norm_groups": norm_groups, "activation": activation}
    if stage == "single":
        return FrameConvBlock(in_channels, out_channels, pool=pool, **opts)
    if stage == "double":
        return nn.Sequential(FrameConvBlock(in_channels, out_channels, pool=None, **opts),
                             FrameConvBlock(out_channels, out_channels, pool=pool, **opts))
    return ResidualFrameBlock(in_channels, out_channels, pool=pool, **opts)
