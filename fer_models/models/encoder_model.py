"""Models built on one :class:`~fer_models.models.frame_encoder.FrameEncoder`, whose options are declared once.

:class:`EncoderModel` takes the encoder's options (channels, kernel size, GroupNorm groups,
activation, front-end) and the dropout rate, checks them and builds ``self.encoder``;
:class:`FrameCNN` (``cnn``, ``cnn_attention``) and ``cnn_rnn`` add their own heads and pass the
encoder options through. The registry reads the options of both levels (``model_options``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

from torch import Tensor, nn

from fer_models.common.labels import IMAGE_SIDE, NUM_CLASSES
from fer_models.models.blocks import FerModel
from fer_models.models.frame_encoder import FrameEncoder, check_image_size, resolve_channels


class EncoderModel(FerModel):
    """Base of the models with a frame encoder: builds ``self.encoder`` from the shared options.

    Args:
        num_classes: number of output logits.
        image_size: input height and width.
        in_channels: image channels (1 = grey).
        channels: output channels of the conv blocks (each halves H and W); default 16-32-64-128
            (pixels) or 64-64 (scatter).
        kernel_size: spatial kernel size of the convolutions.
        norm_groups: GroupNorm groups per block.
        dropout: dropout rate of the model's head (0 disables it); kept as ``dropout_rate``.
        activation: ``relu`` or ``tanh`` after each GroupNorm (the DP recipe uses tanh).
        frontend: ``pixels`` or ``scatter`` (a fixed ScatterNet before the conv blocks; the DP
            recipe uses it; default channels then 64-64).
        stage: what each resolution is made of: ``single`` conv blocks (default), ``double`` (VGG) or
            ``residual`` blocks (:mod:`fer_models.models.stages`; named encoders there: ``ENCODERS``).
        frame_readout: a frame's embedding from its last maps: ``mean``, ``flatten`` (the layout kept) or ``auto``
            (flatten behind scatter, mean behind pixels); models that pool the maps themselves
            (``cnn_attention``) do not use it.
    """

    #: False drops the encoder's last 2x pooling (a finer map for spatial attention).
    POOL_LAST: ClassVar[bool] = True

    def __init__(
        self,
        *,
        num_classes: int = NUM_CLASSES,
        image_size: int = IMAGE_SIDE,
        in_channels: int = 1,
        channels: Sequence[int] | None = None,
        kernel_size: int = 3,
        norm_groups: int = 8,
        dropout: float = 0.25,
        activation: str = "relu",
        frontend: str = "pixels",
        stage: str = "single",
        frame_readout: str = "auto",
    ) -> None:
        super().__init__(num_classes=num_classes, image_size=image_size, in_channels=in_channels)
        channels = resolve_channels(channels, frontend=frontend)
        check_image_size(image_size, channels=channels, frontend=frontend)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1) (got {dropout})")
        self.dropout_rate = dropout
        self.encoder = FrameEncoder(
            in_channels=in_channels, channels=channels, kernel_size=kernel_size, norm_groups=norm_groups,
            pool_last=self.POOL_LAST, activation=activation, frontend=frontend, image_size=image_size,
            stage=stage, frame_readout=frame_readout,
        )


class FrameCNN(EncoderModel):
    """Base of the per-frame CNN models: encoder → frame features → mean over frames → dropout → Linear.

    Subclasses choose how feature maps become frame features: ``POOL_LAST = False`` drops the
    encoder's last 2x pooling, and :meth:`make_spatial_pool` may return a module (kept as ``pool``)
    mapping ``(B, D, T, H', W')`` maps to ``(B, T, D)``; ``None`` means the spatial mean.

    Options: those of :class:`EncoderModel` (``dropout`` is applied before the classifier).
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.pool: nn.Module | None = self.make_spatial_pool(self.encoder.map_channels)
        self.dropout = nn.Dropout(p=self.dropout_rate, inplace=False)
        feature_dim = self.encoder.out_dim if self.pool is None else self.encoder.map_channels
        self.classifier = nn.Linear(feature_dim, self.num_classes)

    def make_spatial_pool(self, dim: int) -> nn.Module | None:
        """The module pooling ``(B, dim, T, H', W')`` maps to ``(B, T, dim)``; ``None``: the
        encoder's own frame embedding (spatial mean, or flattened maps behind the scatter front-end)."""
        return None

    def frame_features(self, x: Tensor) -> Tensor:
        """``(B, T, C, H, W)`` clips → ``(B, T, D)`` frame features."""
        if self.pool is None:
            return self.encoder(x)
        return self.pool(self.encoder.feature_maps(x))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, C, H, W)`` clips → ``(B, num_classes)`` logits."""
        self.check_input(x)
        return self.classifier(self.dropout(self.frame_features(x).mean(dim=1)))
