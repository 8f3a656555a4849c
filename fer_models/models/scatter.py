"""A fixed ScatterNet front-end (Tramer & Boneh 2021, "Differentially private learning needs
better features (or much more data)").

A 2-D wavelet scattering transform (kymatio's ``Scattering2D``: Morlet wavelets, ``J`` scales,
``L`` angles, order 2) turns each frame into ``K = 1 + J*L + L*L*J*(J-1)/2`` maps at
``1/2**J`` of the resolution (81 maps of 12x12 for a 48x48 face with J=2, L=8). It has no
trainable parameters, so DP-SGD spends nothing on learning edge and texture detectors and the
layers trained under DP start from good features; a GroupNorm without affine parameters
normalises each clip's maps (statistics of that clip only: no information crosses samples).

The batch dimension stays first and intact (the transform runs on ``(B, C, T, H, W)`` as is), and
the wavelet filters are non-persistent buffers: they are rebuilt from ``J``, ``L`` and the image
size, never stored in a state_dict nor sent to the server. A frame's maps are computed once per process
(:mod:`fer_models.models.scatter_cache`): later epochs, rounds and evaluations of the same images reuse them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fer_models.models.scatter_cache import memo

#: GroupNorm groups on the scattering maps (27 groups of 3 for the 81 maps of J=2, L=8).
SCATTER_NORM_GROUPS = 27
#: Scales and angles of fedfer's front-end: 81 maps at 1/4 of the resolution.
SCATTER_J = 2
SCATTER_L = 8


def scatter_channels(*, J: int, L: int) -> int:
    """Maps per input channel of an order-2 scattering transform with ``J`` scales and ``L`` angles."""
    return 1 + J * L + L * L * J * (J - 1) // 2


class ScatterFrontend(nn.Module):
    """``(B, C, T, H, W)`` clips → ``(B, C*K, T, H/2**J, W/2**J)`` normalised scattering maps."""

    def __init__(self, *, image_size: int, in_channels: int = 1, J: int = SCATTER_J, L: int = SCATTER_L) -> None:
        super().__init__()
        if J < 1 or L < 1:
            raise ValueError(f"scattering needs J >= 1 and L >= 1 (got J={J}, L={L})")
        if image_size % (2 ** J) or image_size // (2 ** J) < 2:
            raise ValueError(f"image_size={image_size} must be a multiple of 2**J={2 ** J} and at least "
                             f"{2 ** (J + 1)} for the scattering front-end; use 48 (FER2013) or a smaller J")
        from kymatio.torch import Scattering2D  # imported here: only scatter models need kymatio

        self.scattering = Scattering2D(J=J, shape=(image_size, image_size), L=L)
        for name, buffer in list(self.scattering.named_buffers(recurse=False)):
            self.scattering.register_buffer(name, buffer, persistent=False)  # filters: rebuilt, never sent
        self.downsample = 2 ** J
        self._tag = f"scattering J={J} L={L} {image_size}x{image_size}".encode()  # the memo's key prefix
        self.out_channels = in_channels * scatter_channels(J=J, L=L)
        self.norm = nn.GroupNorm(math.gcd(self.out_channels, SCATTER_NORM_GROUPS), self.out_channels, affine=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        with torch.no_grad():  # fixed transform of the input: nothing to differentiate; each frame's maps once
            maps = memo().maps(x.reshape(b * c * t, h, w), tag=self._tag, compute=self.scattering)  # (N, K, h', w')
        maps = maps.reshape(b, c, t, *maps.shape[1:]).permute(0, 1, 3, 2, 4, 5)
        maps = maps.reshape(b, self.out_channels, t, *maps.shape[-2:])
        return self.norm(maps)
