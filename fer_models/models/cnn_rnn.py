"""``cnn_rnn``: the hybrid model (per-frame CNN → Opacus DPGRU/DPLSTM over time → Linear)."""

from __future__ import annotations

from typing import Sequence

import torch
from opacus.layers import DPGRU, DPLSTM
from torch import Tensor, nn

from fer_models.labels import IMAGE_SIDE, NUM_CLASSES
from fer_models.models.blocks import FerModel, FrameEncoder, check_image_size, resolve_channels
from fer_models.models.registry import register_model

RNN_CELLS: dict[str, type[nn.Module]] = {"gru": DPGRU, "lstm": DPLSTM}
READOUTS = ("last", "mean")


class TemporalAttention(nn.Module):
    """Softmax-over-time attention pooling: ``(B, T, H)`` → ``(B, H)``.

    The score of each step is a ``Linear(H, 1)`` of its RNN output (Opacus has a grad sampler
    for Linear, so the "query" is a layer, not a bare parameter).
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.score = nn.Linear(hidden_size, 1)

    def weights(self, h: Tensor) -> Tensor:
        """``(B, T, H)`` → ``(B, T)`` attention weights summing to 1 over ``T``."""
        return torch.softmax(self.score(h).squeeze(-1), dim=1)

    def forward(self, h: Tensor) -> Tensor:
        return torch.einsum("bt,bth->bh", self.weights(h), h)


@register_model("cnn_rnn")
class CNNRNN(FerModel):
    """Hybrid CNN-RNN: frame encoder → ``DPGRU``/``DPLSTM`` over frames → readout → Linear.

    At default settings (channels 16-32-64-128, GRU hidden 64, 7 classes) it has 135,095
    parameters (LSTM: 147,511; temporal attention adds 65).

    Args:
        num_classes: number of output logits.
        image_size: input height and width.
        in_channels: image channels (1 = grey).
        channels: output channels of the conv blocks (each halves H and W); default 16-32-64-128
            (pixels) or 64-64 (scatter).
        kernel_size: spatial kernel size of the convolutions.
        norm_groups: GroupNorm groups per block.
        rnn: ``"gru"`` (opacus DPGRU) or ``"lstm"`` (opacus DPLSTM).
        hidden_size: RNN hidden size.
        num_layers: stacked RNN layers.
        readout: ``"last"`` (last RNN output) or ``"mean"`` (mean over frames); ignored
            (and must stay at its default) when ``temporal_attention`` is on.
        temporal_attention: pool the RNN outputs with learned softmax weights over frames.
        dropout: dropout on frame embeddings and before the classifier (0 disables it).
        activation: ``relu`` or ``tanh`` in the frame encoder (the DP recipe uses tanh).
        frontend: ``pixels`` or ``scatter`` (a fixed ScatterNet before the conv blocks; the DP
            recipe uses it; default channels then 64-64).
    """

    DEFAULT_PARAM_COUNT = 135_095

    def __init__(
        self,
        *,
        num_classes: int = NUM_CLASSES,
        image_size: int = IMAGE_SIDE,
        in_channels: int = 1,
        channels: Sequence[int] | None = None,
        kernel_size: int = 3,
        norm_groups: int = 8,
        rnn: str = "gru",
        hidden_size: int = 64,
        num_layers: int = 1,
        readout: str = "last",
        temporal_attention: bool = False,
        dropout: float = 0.25,
        activation: str = "relu",
        frontend: str = "pixels",
    ) -> None:
        super().__init__(num_classes=num_classes, image_size=image_size, in_channels=in_channels)
        channels = resolve_channels(channels, frontend=frontend)
        check_image_size(image_size, channels=channels, frontend=frontend)
        if rnn not in RNN_CELLS:
            raise ValueError(f"rnn must be one of {sorted(RNN_CELLS)} (got {rnn!r})")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {list(READOUTS)} (got {readout!r})")
        if temporal_attention and readout != "last":
            raise ValueError("temporal_attention replaces the readout; leave readout at 'last'")
        if hidden_size < 1 or num_layers < 1:
            raise ValueError(f"hidden_size and num_layers must be >= 1 (got {hidden_size}, {num_layers})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1) (got {dropout})")
        self.rnn_type = rnn
        self.readout = readout
        self.encoder = FrameEncoder(
            in_channels=in_channels, channels=channels, kernel_size=kernel_size, norm_groups=norm_groups,
            activation=activation, frontend=frontend, image_size=image_size,
        )
        self.frame_dropout = nn.Dropout(p=dropout, inplace=False)
        self.rnn = RNN_CELLS[rnn](self.encoder.out_dim, hidden_size, num_layers=num_layers, batch_first=True)
        self.attention = TemporalAttention(hidden_size) if temporal_attention else None
        self.dropout = nn.Dropout(p=dropout, inplace=False)
        self.classifier = nn.Linear(hidden_size, num_classes)

    def rnn_outputs(self, x: Tensor) -> Tensor:
        """``(B, T, C, H, W)`` clips → ``(B, T, hidden_size)`` RNN outputs."""
        frames = self.frame_dropout(self.encoder(x))  # (B, T, D)
        out, _ = self.rnn(frames)
        return out

    def temporal_weights(self, x: Tensor) -> Tensor:
        """``(B, T)`` attention weights over frames (only with ``temporal_attention=True``)."""
        if self.attention is None:
            raise RuntimeError("this cnn_rnn was built without temporal_attention=True")
        self.check_input(x)
        return self.attention.weights(self.rnn_outputs(x))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, C, H, W)`` clips → ``(B, num_classes)`` logits."""
        self.check_input(x)
        out = self.rnn_outputs(x)
        if self.attention is not None:
            pooled = self.attention(out)
        elif self.readout == "mean":
            pooled = out.mean(dim=1)
        else:
            pooled = out[:, -1]
        return self.classifier(self.dropout(pooled))
