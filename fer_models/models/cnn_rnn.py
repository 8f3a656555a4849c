"""``cnn_rnn``: the hybrid model (per-frame CNN → Opacus DPGRU/DPLSTM over time → Linear)."""

from __future__ import annotations

from typing import Any

import torch
from opacus.layers import DPGRU, DPLSTM
from torch import Tensor, nn

from fer_models.models.encoder_model import EncoderModel
from fer_models.models.registry import register_model
from fer_models.models.rnn_step import RecurrentStep

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
class CNNRNN(EncoderModel):
    """Hybrid CNN-RNN: frame encoder → ``DPGRU``/``DPLSTM`` over frames → readout → Linear.

    At default settings (channels 16-32-64-128, GRU hidden 64, 7 classes) it has 135,095
    parameters (LSTM: 147,511; temporal attention adds 65).

    Args (besides the frame encoder's options and ``dropout``, see
    :class:`~fer_models.models.encoder_model.EncoderModel`; here ``dropout`` acts on the frame
    embeddings and before the classifier):
        rnn: ``"gru"`` (opacus DPGRU) or ``"lstm"`` (opacus DPLSTM).
        hidden_size: RNN hidden size.
        num_layers: stacked RNN layers.
        readout: ``"last"`` (last RNN output) or ``"mean"`` (mean over frames); ignored
            (and must stay at its default) when ``temporal_attention`` is on.
        temporal_attention: pool the RNN outputs with learned softmax weights over frames.
    """

    DEFAULT_PARAM_COUNT = 135_095

    def __init__(
        self,
        *,
        rnn: str = "gru",
        hidden_size: int = 64,
        num_layers: int = 1,
        readout: str = "last",
        temporal_attention: bool = False,
        **options: Any,
    ) -> None:
        if rnn not in RNN_CELLS:
            raise ValueError(f"rnn must be one of {sorted(RNN_CELLS)} (got {rnn!r})")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {list(READOUTS)} (got {readout!r})")
        if temporal_attention and readout != "last":
            raise ValueError("temporal_attention replaces the readout; leave readout at 'last'")
        if hidden_size < 1 or num_layers < 1:
            raise ValueError(f"hidden_size and num_layers must be >= 1 (got {hidden_size}, {num_layers})")
        super().__init__(**options)  # the frame encoder (EncoderModel's options) and the dropout rate
        self.rnn_type = rnn
        self.readout = readout
        self.frame_dropout = nn.Dropout(p=self.dropout_rate, inplace=False)
        self.rnn = RNN_CELLS[rnn](self.encoder.out_dim, hidden_size, num_layers=num_layers, batch_first=True)
        self.attention = TemporalAttention(hidden_size) if temporal_attention else None
        self.dropout = nn.Dropout(p=self.dropout_rate, inplace=False)
        self.classifier = nn.Linear(hidden_size, self.num_classes)

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

    def step_model(self) -> RecurrentStep:
        """The carried-state form of this model (same modules, same weights): ``(frames, state)`` →
        ``(logits, next state)``, one frame per call; see :mod:`fer_models.models.rnn_step`."""
        return RecurrentStep(encoder=self.encoder, rnn=self.rnn, classifier=self.classifier, readout=self.readout,
                             image_size=self.image_size, in_channels=self.in_channels, attention=self.attention)
