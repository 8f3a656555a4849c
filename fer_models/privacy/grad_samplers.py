"""Faster exact Opacus per-sample gradients for fedfer's per-frame convolutions.

fedfer's models convolve every frame with ``nn.Conv3d`` kernels of shape ``(1, k, k)`` on
``(B, C, T, H, W)`` clips (the batch dimension stays first, frames never mix). Opacus' stock
grad sampler for ``Conv3d`` unfolds the whole 3-D input (``unfold3d``: padding, strided views
and large copies) and contracts it with an einsum; in a ``hooks`` DP step of cnn_rnn (batch 64,
one thread, CPU time) that was about three quarters of the extra time over a plain step.
Measured the same way, this sampler cuts it from 76 to 47 ms at T=1 and from 262 to 90 ms at
T=3. With 2 threads on a CPU shared with other jobs the oneDNN grouped kernel fared worse than
the stock sampler (benchmarks/results/dp_overhead.md), so fedfer's default mode stays ``ew``.

A ``(1, k, k)`` kernel is a ``Conv2d`` applied to each frame, and the per-sample weight gradient
``G[b] = sum_t dW(frame t of sample b)`` is exactly the weight gradient of one *grouped* 2-D
convolution: put the ``B`` samples into the channel axis as ``B`` groups (``(T, B*C, H, W)``)
and the ``T`` frames into the batch axis, whose sum the weight gradient already takes. One call
of ``aten::convolution_backward`` (the same kernel PyTorch's own backward uses) then returns
all ``B`` per-sample gradients ``(B*O, C/groups, k, k)``, with no unfolded copy of the input.

Importing this module registers :func:`compute_frame_conv_grad_sample` for ``nn.Conv3d`` with
Opacus (modes ``hooks`` and ``ghost``); ``fer_models.privacy.dp_sgd`` imports it, so the sampler is in
place before any model is made private. Other ``Conv3d`` kernels (depth > 1, temporal stride or
padding, non-zero padding modes) fall back to Opacus' own sampler. Plain PyTorch + Opacus.

It also gives :class:`~fer_models.models.frame_norm.FrameGroupNorm` (group norm of each frame
alone) its per-sample gradients: ``weight[b] = sum over (T, H, W) of grad_output * x_hat`` and
``bias[b] = sum of grad_output``, per channel, where ``x_hat`` is the per-frame normalised input.
Opacus' own GroupNorm sampler would normalise over all frames; its ``hooks``/``ghost`` modes get
:func:`compute_frame_group_norm_grad_sample`, its ``ew`` mode (PyTorch ExpandedWeights, which
refuses any function it has no rule for) gets :class:`FrameGroupNormPerSampleGrad`.
"""

from __future__ import annotations

import torch
from opacus.grad_sample import register_grad_sampler
from opacus.grad_sample.conv import compute_conv_grad_sample
from torch import Tensor, nn
from torch.nn.utils._expanded_weights.expanded_weights_impl import implements_per_sample_grads
from torch.nn.utils._expanded_weights.expanded_weights_utils import (
    forward_helper,
    set_grad_sample_if_exists,
    standard_kwargs,
    unpack_expanded_weight_or_tensor,
)

from fer_models.models.frame_norm import FrameGroupNorm, frame_group_norm


def is_frame_conv(layer: nn.Module) -> bool:
    """True for a ``Conv3d`` that convolves each frame alone: kernel ``(1, k, k)``, temporal stride 1,
    no temporal padding, zero padding given as numbers (not ``"same"``/``"valid"``)."""
    return (
        type(layer) is nn.Conv3d
        and layer.kernel_size[0] == 1
        and layer.stride[0] == 1
        and not isinstance(layer.padding, str)
        and layer.padding[0] == 0
        and layer.padding_mode == "zeros"
    )


def frame_conv_weight_grad_sample(layer: nn.Conv3d, activations: Tensor, backprops: Tensor) -> Tensor:
    """Per-sample weight gradients ``(B, *layer.weight.shape)`` of a per-frame ``Conv3d``.

    ``activations`` is the layer input ``(B, C, T, H, W)``, ``backprops`` the gradient of the
    loss with respect to its output ``(B, O, T, H', W')``.
    """
    b, c, t, h, w = activations.shape
    o = backprops.shape[1]
    frames_in = activations.permute(2, 0, 1, 3, 4).reshape(t, b * c, h, w)
    frames_grad = backprops.permute(2, 0, 1, 3, 4).reshape(t, b * o, *backprops.shape[3:])
    # Only the shape of the weight matters for the weight gradient: no copy of the weight per sample.
    kernel = activations.new_empty((b * o, c // layer.groups, *layer.kernel_size[1:]))
    _, grad_weight, _ = torch.ops.aten.convolution_backward(
        frames_grad, frames_in, kernel, None, list(layer.stride[1:]), list(layer.padding[1:]),
        list(layer.dilation[1:]), False, [0, 0], b * layer.groups, [False, True, False],
    )
    return grad_weight.view(b, *layer.weight.shape)


@register_grad_sampler(nn.Conv3d)
def compute_frame_conv_grad_sample(layer: nn.Conv3d, activations: list[Tensor],
                                   backprops: Tensor) -> dict[nn.Parameter, Tensor]:
    """Opacus grad sampler for ``nn.Conv3d``: the grouped-backward path for per-frame kernels,
    Opacus' stock sampler for any other ``Conv3d``."""
    x = activations[0]
    if not is_frame_conv(layer) or x.shape[0] == 0:
        return compute_conv_grad_sample(layer, activations, backprops)
    x = x.to(backprops.dtype)
    ret: dict[nn.Parameter, Tensor] = {}
    if layer.weight.requires_grad:
        ret[layer.weight] = frame_conv_weight_grad_sample(layer, x, backprops)
    if layer.bias is not None and layer.bias.requires_grad:
        ret[layer.bias] = backprops.sum(dim=(2, 3, 4))
    return ret


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
