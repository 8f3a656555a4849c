"""The frame encoder: clips ``(B, T, C, H, W)`` to per-frame embeddings ``(B, T, D)``, frames never mixed.

An optional fixed front-end (a ScatterNet) and then one stage per entry of ``channels``
(:mod:`fer_models.models.stages`: ``single`` conv blocks, ``double`` VGG stages or ``residual`` blocks), each
halving the resolution. The batch dimension stays first throughout (Opacus' per-sample gradients are per clip).
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from fer_models.common.labels import IMAGE_SIDE
from fer_models.models.blocks import clip_to_channels_first
from fer_models.models.scatter import SCATTER_J, ScatterFrontend
from fer_models.models.stages import check_stage, make_stage


class FrameEncoder(nn.Module):
    """Stack of encoder stages (``stage``: :mod:`fer_models.models.stages`) turning clips into per-frame features.

    ``feature_maps(x)`` gives ``(B, D, T, H', W')``; ``forward(x)`` gives per-frame embeddings
    ``(B, T, D)`` by spatial average pooling (``B`` and ``T`` stay separate). ``D = channels[-1]``
    and ``H' = H // 2**len(channels)`` (one halving fewer with ``pool_last=False``).
    ``frontend="scatter"`` puts a fixed ScatterNet (:mod:`fer_models.models.scatter`) before the
    blocks, which then start from its 81 maps at a quarter of the resolution; its frame embedding
    is the *flattened* last maps (``D = channels[-1] * H' * W'``), not their spatial mean, so the
    layout of the face (mouth below eyes) is kept: under DP that was worth about 4 points
    (benchmarks/dp_ablation.py exploration). ``frame_readout`` chooses it for either front-end: ``mean``,
    ``flatten``, or ``auto`` (flatten behind scatter, mean behind pixels). Behind per-sample GroupNorm the
    spatial mean leaves little between-image signal early in training (a plain-PyTorch probe on FER2013:
    0.26 PrivateTest accuracy after 400 AdamW steps with the mean, 0.39 with the flattened 3x3 maps).
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64, 128),
        kernel_size: int = 3,
        norm_groups: int = 8,
        pool: str = "max",
        pool_last: bool = True,
        activation: str = "relu",
        frontend: str = "pixels",
        image_size: int = IMAGE_SIDE,
        stage: str = "single",
        frame_readout: str = "auto",
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"channels must be a non-empty sequence of positive ints (got {channels})")
        check_frontend(frontend)
        check_stage(stage)
        check_frame_readout(frame_readout)
        self.frontend: nn.Module = nn.Identity()
        cin = in_channels
        if frontend == "scatter":
            self.frontend = ScatterFrontend(image_size=image_size, in_channels=in_channels)
            cin = self.frontend.out_channels
        blocks = []
        for i, cout in enumerate(channels):
            block_pool = pool if (pool_last or i < len(channels) - 1) else None
            blocks.append(make_stage(stage, cin, cout, kernel_size=kernel_size, norm_groups=norm_groups,
                                     pool=block_pool, activation=activation))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.downsample = FRONTEND_DOWNSAMPLE[frontend] * 2 ** (len(channels) if pool_last else len(channels) - 1)
        self.flatten = frame_readout == "flatten" or (frame_readout == "auto" and frontend == "scatter")
        side = image_size // self.downsample
        self.out_dim = channels[-1] * side * side if self.flatten else channels[-1]
        self.map_channels = channels[-1]

    def feature_maps(self, x: Tensor) -> Tensor:
        """``(B, T, C, H, W)`` clips → ``(B, D, T, H', W')`` feature maps."""
        return self.blocks(self.frontend(clip_to_channels_first(x)))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, C, H, W)`` clips → ``(B, T, D)`` frame embeddings."""
        maps = self.feature_maps(x)
        if self.flatten:
            return maps.permute(0, 2, 1, 3, 4).flatten(2)  # (B, T, D*H'*W'): B and T kept apart
        return maps.mean(dim=(3, 4)).transpose(1, 2)


#: Where the conv blocks start: raw pixels (all layers trained) or a fixed ScatterNet (DP recipe).
FRONTENDS = ("pixels", "scatter")
#: How a frame's last maps become its embedding (``auto``: flatten behind scatter, mean behind pixels).
FRAME_READOUTS = ("auto", "mean", "flatten")
#: Default conv channels per front-end (the scatter maps are already 12x12 for 48x48 faces).
DEFAULT_CHANNELS: dict[str, tuple[int, ...]] = {"pixels": (16, 32, 64, 128), "scatter": (64, 64)}
#: Resolution divisor of each front-end (scatter: one halving per scattering scale).
FRONTEND_DOWNSAMPLE = {"pixels": 1, "scatter": 2 ** SCATTER_J}


def check_frontend(frontend: str) -> None:
    if frontend not in FRONTENDS:
        raise ValueError(f"frontend must be one of {', '.join(FRONTENDS)} (got {frontend!r})")


def check_frame_readout(frame_readout: str) -> None:
    if frame_readout not in FRAME_READOUTS:
        raise ValueError(f"frame_readout must be one of {', '.join(FRAME_READOUTS)} (got {frame_readout!r})")


def resolve_channels(channels: Sequence[int] | None, *, frontend: str) -> tuple[int, ...]:
    """The conv channels: as given, or the front-end's default."""
    check_frontend(frontend)
    return DEFAULT_CHANNELS[frontend] if channels is None else tuple(int(c) for c in channels)


def check_image_size(image_size: int, *, channels: Sequence[int], frontend: str = "pixels") -> None:
    """Raise ``ValueError`` unless ``image_size`` survives the front-end and ``len(channels)`` 2x poolings."""
    need = FRONTEND_DOWNSAMPLE[frontend] * 2 ** len(tuple(channels))
    if image_size < need:
        raise ValueError(
            f"image_size={image_size} is too small for the {frontend} front-end and {len(tuple(channels))} "
            f"2x pooling blocks (needs >= {need}); use 48 (FER2013) or fewer channels entries"
        )
