"""``cnn_attention``: CNN whose global average pool is replaced by spatial attention pooling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fer_models.models.encoder_model import FrameCNN
from fer_models.models.registry import register_model


class SpatialAttentionPool(nn.Module):
    """Attention pooling over spatial positions, per frame.

    A ``1x1x1`` Conv3d scores every position of ``(B, D, T, H, W)`` features; a softmax over the
    ``H*W`` positions of each frame gives the map; the pooled frame feature is the map-weighted
    sum of features → ``(B, T, D)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.score = nn.Conv3d(channels, 1, kernel_size=1)

    def attention(self, feats: Tensor) -> Tensor:
        """``(B, D, T, H, W)`` → ``(B, T, H, W)`` softmax map (sums to 1 per frame)."""
        b, _, t, h, w = feats.shape
        scores = self.score(feats).reshape(b, t, h * w)
        return torch.softmax(scores, dim=-1).reshape(b, t, h, w)

    def forward(self, feats: Tensor) -> Tensor:
        return torch.einsum("bthw,bdthw->btd", self.attention(feats), feats)


@register_model("cnn_attention")
class CNNAttention(FrameCNN):
    """CNN with spatial attention pooling: frame encoder → attention pool → mean over frames → Linear.

    At default settings (channels 16-32-64-128, 7 classes) it has 98,424 parameters.
    :meth:`attention_map` shows where the model looked. Options: those of
    :class:`~fer_models.models.encoder_model.FrameCNN`.
    """

    DEFAULT_PARAM_COUNT = 98_424
    POOL_LAST = False  # attend over a finer map (6x6 for 48x48 inputs at default settings)

    def make_spatial_pool(self, dim: int) -> SpatialAttentionPool:
        return SpatialAttentionPool(dim)

    @torch.no_grad()
    def attention_map(self, x: Tensor, *, upsample: bool = False) -> Tensor:
        """Softmax attention over positions: ``(B, T, H', W')``, or ``(B, T, H, W)`` if ``upsample``.

        Each frame's map sums to 1 (the upsampled map is bilinearly resized and renormalised).
        """
        self.check_input(x)
        amap = self.pool.attention(self.encoder.feature_maps(x))
        if not upsample:
            return amap
        b, t = amap.shape[:2]
        up = F.interpolate(amap.reshape(b * t, 1, *amap.shape[2:]), size=tuple(x.shape[-2:]),
                           mode="bilinear", align_corners=False)
        up = up / up.sum(dim=(-2, -1), keepdim=True)
        return up.reshape(b, t, *x.shape[-2:])
