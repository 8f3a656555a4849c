"""The carried-state ("step") form of ``cnn_rnn``: one frame and the recurrent state in, logits and the next state out.

:class:`RecurrentStep` runs the model's own modules (the frame encoder, the Opacus ``DPGRUCell`` /
``DPLSTMCell`` of every layer, the temporal attention score and the classifier), so the weights are
the trained ones by construction and the gate math is Opacus's own (GRU ``r, z, n``; LSTM
``i, f, g, o``). The state is one float tensor ``(B, R, H)``, all zeros before the first frame, whose
rows are (:func:`state_rows`):

- ``h0 .. h{L-1}``: each layer's hidden state; LSTM adds ``c0 .. c{L-1}``, each layer's cell state;
- ``count``: frames seen so far (the same number in every column);
- readout ``mean``: ``mean``, the running mean of the top layer's outputs;
- temporal attention: ``score_max`` (broadcast), ``weight_sum`` (broadcast) and ``weighted_sum``, an
  online softmax (the running maximum of the scores rescales the sums, as in streaming attention), so
  the attention over every frame so far is exact in O(1) per frame.

After frame ``t`` the logits are those of the recurrent layer and readout run over the embeddings of
frames ``0..t``, each frame encoded on its own, which is what the window model's ``forward`` over
frames ``0..t`` computes too (its GroupNorm normalises each frame alone:
:mod:`fer_models.models.frame_norm`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class StepUnsupportedError(ValueError):
    """A model (or setting) whose recurrent state cannot be carried exactly from frame to frame."""


def state_rows(*, num_layers: int, lstm: bool, readout: str, attention: bool) -> list[str]:
    """Names of the rows of the carried state, in order (see the module docstring)."""
    rows = [f"h{i}" for i in range(num_layers)] + ([f"c{i}" for i in range(num_layers)] if lstm else [])
    rows.append("count")
    if attention:
        rows += ["score_max", "weight_sum", "weighted_sum"]
    elif readout == "mean":
        rows.append("mean")
    return rows


class RecurrentStep(nn.Module):
    """``forward(frames (B, C, S, S), state (B, R, H))`` → ``(logits (B, K), next state (B, R, H))``."""

    def __init__(self, *, encoder: nn.Module, rnn: nn.Module, classifier: nn.Module, readout: str,
                 image_size: int, in_channels: int = 1, attention: nn.Module | None = None) -> None:
        super().__init__()
        if getattr(rnn, "num_directions", 1) != 1:
            raise StepUnsupportedError("a bidirectional RNN reads frames that have not arrived yet: its state "
                                       "cannot be carried; use the window model")
        if readout not in ("last", "mean"):
            raise StepUnsupportedError(f"readout={readout!r} has no carried form; use readout 'last' or 'mean'")
        self.encoder, self.classifier, self.attention = encoder, classifier, attention
        self.num_layers, self.hidden_size = int(rnn.num_layers), int(rnn.hidden_size)
        self.lstm = bool(getattr(rnn, "has_cell_state", False))
        self.cells = nn.ModuleList(getattr(rnn, f"l{i}") for i in range(self.num_layers))
        self.readout = readout
        self.rows = state_rows(num_layers=self.num_layers, lstm=self.lstm, readout=readout,
                               attention=attention is not None)
        self.image_size, self.in_channels = int(image_size), int(in_channels)
        self.num_classes = int(classifier.out_features)
        self.eval()

    def zero_state(self, batch: int) -> Tensor:
        """The state before the first frame of ``batch`` new tracks."""
        return torch.zeros(batch, len(self.rows), self.hidden_size)

    def forward(self, frames: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        L, lstm = self.num_layers, self.lstm
        x = self.encoder(frames.unsqueeze(1))[:, 0]  # (B, D): the frame encoded on its own
        h_next, c_next = [], []
        for i, cell in enumerate(self.cells):
            if lstm:
                h, c = cell(x, (state[:, i], state[:, L + i]))
                c_next.append(c)
            else:
                h = cell(x, state[:, i])
            h_next.append(h)
            x = h
        k = 2 * L if lstm else L
        count = state[:, k]
        new_count = count + 1.0
        extra: list[Tensor] = []
        if self.attention is not None:
            score = self.attention.score(x)  # (B, 1)
            old_max, old_sum, old_weighted = state[:, k + 1], state[:, k + 2], state[:, k + 3]
            new_max = torch.where(count > 0, torch.maximum(old_max, score), score.expand_as(old_max))
            rescale, weight = torch.exp(old_max - new_max), torch.exp(score - new_max)
            new_sum = old_sum * rescale + weight
            new_weighted = old_weighted * rescale + weight * x
            pooled = new_weighted / new_sum
            extra = [new_max, new_sum, new_weighted]
        elif self.readout == "mean":
            pooled = state[:, k + 1] + (x - state[:, k + 1]) / new_count
            extra = [pooled]
        else:
            pooled = x
        logits = self.classifier(pooled)
        return logits, torch.stack([*h_next, *c_next, new_count, *extra], dim=1)
