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

The per-frame GroupNorm's per-sample gradients are registered beside it, in
:mod:`fer_models.models.frame_norm` (so that any model holding one is Opacus-ready as soon as it exists).
"""

from __future__ import annotations

import torch
from opacus.grad_sample import register_grad_sampler
from opacus.grad_sample.conv import compute_conv_grad_sample
from torch import Tensor, nn

import fer_models.models.quiet_opacus  # noqa: F401  (Opacus' root log handler off)


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
