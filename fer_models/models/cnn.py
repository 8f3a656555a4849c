"""``cnn``: the static baseline (per-frame CNN, frames averaged, linear classifier)."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from fer_models.labels import NUM_CLASSES
from fer_models.models.blocks import FerModel, FrameEncoder, check_image_size
from fer_models.models.registry import register_model


@register_model("cnn")
class CNN(FerModel):
    """Static CNN baseline: frame encoder → mean over frames → dropout → Linear.

    At default settings (channels 16-32-64-128, 7 classes) it has 98,295 parameters.

    Args:
        num_classes: number of output logits.
        image_size: input height and width.
        in_channels: image channels (1 = grey).
        channels: output channels of the conv blocks (each halves H and W).
        kernel_size: spatial kernel size of the convolutions.
        norm_groups: GroupNorm groups per block.
        dropout: dropout before the classifier (0 disables it).
    """

    DEFAULT_PARAM_COUNT = 98_295

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
            in_channels=in_channels, channels=channels, kernel_size=kernel_size, norm_groups=norm_groups
        )
        self.dropout = nn.Dropout(p=dropout, inplace=False)
        self.classifier = nn.Linear(self.encoder.out_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, C, H, W)`` clips → ``(B, num_classes)`` logits."""
        self.check_input(x)
        frames = self.encoder(x)  # (B, T, D)
        return self.classifier(self.dropout(frames.mean(dim=1)))
