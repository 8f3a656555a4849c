"""Group normalisation of each frame of a clip on its own, batch dimension kept first.

``nn.GroupNorm`` on a ``(B, C, T, H, W)`` clip normalises each channel group over ``T, H, W``:
its statistics span all frames of the clip, so a frame's features depend on the other frames.
:class:`FrameGroupNorm` normalises over ``(C/G, H, W)`` per sample, per frame and per group, so a
frame is encoded alone (the premise of "a CNN per frame, then a recurrent layer", and what the
carried-state step model computes). It subclasses ``nn.GroupNorm``: the parameters (``weight``,
``bias``, shape ``(C,)``), their names and the state dict are the same, and for ``T = 1`` the
output is bitwise the same as ``nn.GroupNorm``'s (the same kernel on the same memory).

Inside, frames are moved next to the batch only for the normalisation kernel; the module's input
and output keep ``B`` first, which is all Opacus' hooks see. The functional form
:func:`frame_group_norm` takes part in ``__torch_function__`` dispatch so that Opacus' ``ew`` mode
(PyTorch ExpandedWeights) can be given a per-sample gradient rule for it;
:mod:`fer_models.privacy.grad_samplers` registers that rule and the ``hooks``/``ghost`` grad sampler.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import handle_torch_function, has_torch_function_variadic


class FrameShapeError(ValueError):
    """An input to :class:`FrameGroupNorm` that is not ``(B, C, T, ...)``."""


def frame_group_norm(x: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None,
                     eps: float = 1e-5) -> Tensor:
    """``(B, C, T, *S)`` → same shape: group norm of every frame ``x[:, :, t]`` on its own.

    Statistics are over ``(C / num_groups, *S)`` for each sample, frame and group; ``weight`` and
    ``bias`` (shape ``(C,)``) are the per-channel affine map, shared by all frames.
    """
    if has_torch_function_variadic(x, weight, bias):  # e.g. Opacus ew mode: ExpandedWeight parameters
        return handle_torch_function(frame_group_norm, (x, weight, bias), x, num_groups,
                                     weight=weight, bias=bias, eps=eps)
    if x.dim() < 3:
        raise FrameShapeError(f"frame_group_norm expects (B, C, T, ...) clips, got shape {tuple(x.shape)}; "
                              "use nn.GroupNorm for inputs without a time axis")
    b, c, t, *space = x.shape
    frames = x.transpose(1, 2).reshape(b * t, c, *space)  # a view when T = 1: the same memory as x
    out = F.group_norm(frames, num_groups, weight, bias, eps)
    return out.reshape(b, t, c, *space).transpose(1, 2)


class FrameGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` for ``(B, C, T, H, W)`` clips that normalises each frame alone (see the module doc).

    Same constructor, parameters and state dict as ``nn.GroupNorm(num_groups, num_channels)``.
    """

    def forward(self, x: Tensor) -> Tensor:
        return frame_group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
