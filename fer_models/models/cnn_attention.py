"""``cnn_attention``: CNN whose global average pool is replaced by spatial attention pooling."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fer_models.labels import NUM_CLASSES
from fer_models.models.blocks import FerModel, FrameEncoder, check_image_size
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
class CNNAttention(FerModel):
    """CNN with spatial attention pooling: frame encoder → attention pool → mean over frames → Linear.

    At default settings (channels 16-32-64-128, 7 classes) it has 98,424 parameters.
    :meth:`attention_map` shows where the model looked.

    Args:
        num_classes: number of output logits.
        image_size: input height and width.
        in_channels: image channels (1 = grey).
        channels: output channels of the conv blocks (each halves H and W).
        kernel_size: spatial kernel size of the convolutions.
        norm_groups: GroupNorm groups per block.
        dropout: dropout before the classifier (0 disables it).
    """

    DEFAULT_PARAM_COUNT = 98_424

    def __init__(
        self,
        *,
        num_classes: int = NUM_CLASSES,
        image_size: int = 48,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64, 128),
        kernel_size: int = 3,
        norm_groups: int = 8,
        dropout: float = 0.25,
    ) -> None:
        super().__init__(num_classes=num_classes, image_size=image_size, in_channels=in_channels)
        check_image_size(image_size, channels=channels)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1) (got {dropout})")
        self.encoder = FrameEncoder(
            in_channels=in_channels, channels=channels, kernel_size=kernel_size, norm_groups=norm_groups,
            pool_last=False,  # attend over a finer map (6x6 for 48x48 inputs at default settings)
        )
        self.pool = SpatialAttentionPool(self.encoder.out_dim)
        self.dropout = nn.Dropout(p=dropout, inplace=False)
        self.classifier = nn.Linear(self.encoder.out_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, C, H, W)`` clips → ``(B, num_classes)`` logits."""
        self.check_input(x)
        frames = self.pool(self.encoder.feature_maps(x))  # (B, T, D)
        return self.classifier(self.dropout(frames.mean(dim=1)))

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
