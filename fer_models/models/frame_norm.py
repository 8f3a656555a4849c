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
(PyTorch ExpandedWeights) can be given a per-sample gradient rule for it.

Per-sample gradients (registered here, on import, so a model holding a FrameGroupNorm is Opacus-ready as soon
as it exists): ``weight[b] = sum over (T, H, W) of grad_output * x_hat`` and ``bias[b] = sum of grad_output``,
per channel, where ``x_hat`` is the per-frame normalised input (Opacus' own GroupNorm sampler would normalise
over all frames). Opacus' ``hooks``/``ghost`` modes get :func:`compute_frame_group_norm_grad_sample`, its
``ew`` mode (PyTorch ExpandedWeights, which refuses any function it has no rule for) gets
:class:`FrameGroupNormPerSampleGrad`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from opacus.grad_sample import register_grad_sampler
from torch import Tensor, nn
from torch.nn.utils._expanded_weights.expanded_weights_impl import implements_per_sample_grads
from torch.nn.utils._expanded_weights.expanded_weights_utils import (
    forward_helper,
    set_grad_sample_if_exists,
    standard_kwargs,
    unpack_expanded_weight_or_tensor,
)
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


def frame_group_norm_grad_sample(x: Tensor, backprops: Tensor, *, num_groups: int, eps: float) -> tuple[Tensor, Tensor]:
    """Per-sample ``(weight, bias)`` gradients ``(B, C)`` of a per-frame group norm with input ``x``
    ``(B, C, T, ...)`` and output gradient ``backprops`` (same shape)."""
    dims = tuple(range(2, x.dim()))
    x_hat = frame_group_norm(x, num_groups, eps=eps)
    return (x_hat * backprops).sum(dim=dims), backprops.sum(dim=dims)


@register_grad_sampler(FrameGroupNorm)
def compute_frame_group_norm_grad_sample(layer: FrameGroupNorm, activations: list[Tensor],
                                         backprops: Tensor) -> dict[nn.Parameter, Tensor]:
    """Opacus grad sampler (``hooks``, ``ghost``) for :class:`FrameGroupNorm`."""
    x = activations[0].to(backprops.dtype)
    weight, bias = frame_group_norm_grad_sample(x, backprops, num_groups=layer.num_groups, eps=layer.eps)
    ret: dict[nn.Parameter, Tensor] = {}
    if layer.weight is not None and layer.weight.requires_grad:
        ret[layer.weight] = weight
    if layer.bias is not None and layer.bias.requires_grad:
        ret[layer.bias] = bias
    return ret


@implements_per_sample_grads(frame_group_norm)
class FrameGroupNormPerSampleGrad(torch.autograd.Function):
    """ExpandedWeights (Opacus ``ew`` mode) rule for :func:`frame_group_norm`: the output and the
    input gradient as autograd computes them, the per-sample parameter gradients set on the
    parameters' ``grad_sample`` (scaled for the loss reduction by PyTorch's helper)."""

    @staticmethod
    def forward(ctx, kwarg_names, _, *expanded_args_and_kwargs):  # noqa: ANN001, ANN205 (autograd signature)
        args, kwargs = standard_kwargs(kwarg_names, expanded_args_and_kwargs)
        x, num_groups = args
        out = forward_helper(frame_group_norm, (x, num_groups), kwargs)  # checks batch sizes, unexpands
        ctx.x, ctx.num_groups, ctx.kwargs = x, num_groups, kwargs
        return out

    @staticmethod
    def backward(ctx, grad_output):  # noqa: ANN001, ANN205 (autograd signature)
        x, num_groups, kwargs = ctx.x, ctx.num_groups, ctx.kwargs
        weight, bias, eps = kwargs["weight"], kwargs["bias"], kwargs["eps"]
        grad_x = None
        if ctx.needs_input_grad[2]:
            with torch.enable_grad():
                leaf = x.detach().requires_grad_(True)
                w = unpack_expanded_weight_or_tensor(weight, lambda p: p.detach())
                b = unpack_expanded_weight_or_tensor(bias, lambda p: p.detach())
                out = frame_group_norm(leaf, num_groups, w, b, eps)
                (grad_x,) = torch.autograd.grad(out, leaf, grad_output)
            grad_x = grad_x.contiguous()  # the frames' transpose leaves it strided; ew's conv rule views it
        x = x.detach()
        set_grad_sample_if_exists(weight, lambda _: frame_group_norm_grad_sample(
            x, grad_output, num_groups=num_groups, eps=eps)[0])
        set_grad_sample_if_exists(bias, lambda _: grad_output.sum(dim=tuple(range(2, grad_output.dim()))))
        # kwarg names, the function, x, num_groups, then weight, bias, eps (in kwargs' order)
        return (None, None, grad_x, None) + (None,) * len(kwargs)
