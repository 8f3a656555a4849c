"""fedfer's Conv3d grad sampler (fer_models/privacy/grad_samplers.py) gives exactly each sample's gradient.

Checked against gradients computed by hand, one sample at a time with autograd, for the per-frame
``(1, k, k)`` kernels the models use (and strides, groups, dilation, bias), for the Conv3d kernels
it hands back to Opacus, and end to end: the clipped mean gradient of a small ``cnn_rnn`` made
private in ``hooks`` mode equals the clipped mean computed sample by sample.

The same for the per-frame group norm (``FrameGroupNorm``) of the blocks: its hooks sampler and
its ExpandedWeights (``ew``) rule give each clip's gradient for clips of several frames, where
Opacus' stock GroupNorm sampler (statistics over all frames) does not.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from opacus.grad_sample import GradSampleModule
from torch import Tensor, nn

from fer_models.models import create_model
from fer_models.models.frame_norm import (
    FrameGroupNorm,
    FrameGroupNormPerSampleGrad,
    compute_frame_group_norm_grad_sample,
    frame_group_norm,
)
from fer_models.privacy.dp_sgd import PrivacyLedger, make_private
from fer_models.privacy.grad_samplers import compute_frame_conv_grad_sample, is_frame_conv
from fer_models.training.engine import index_loader
from tests.dp_reference import clipped_mean_by_hand

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")]

# (in, out, kernel, stride, padding, dilation, groups, bias): the blocks' 3x3 convs, the 1x1x1 score conv
# of cnn_attention, and the options Conv3d allows on a per-frame kernel.
FRAME_CONVS = {
    "block-3x3": (3, 8, (1, 3, 3), 1, (0, 1, 1), 1, 1, False),
    "score-1x1x1": (8, 1, 1, 1, 0, 1, 1, True),
    "stride-2": (4, 6, (1, 3, 3), (1, 2, 2), (0, 1, 1), 1, 1, True),
    "groups-2-dilated": (4, 6, (1, 3, 3), 1, (0, 2, 2), (1, 2, 2), 2, False),
    "5x5-rect-input": (2, 4, (1, 5, 5), 1, (0, 2, 2), 1, 1, True),
}


def _conv(spec: tuple) -> nn.Conv3d:
    cin, cout, k, stride, pad, dil, groups, bias = spec
    return nn.Conv3d(cin, cout, k, stride=stride, padding=pad, dilation=dil, groups=groups, bias=bias).double()


def _by_hand(layer: nn.Module, x: Tensor, backprops: Tensor) -> list[dict[str, Tensor]]:
    """d<layer(x_b), backprops_b>/dθ for each sample b alone: the per-sample gradient by definition."""
    out = []
    for b in range(x.shape[0]):
        alone = copy.deepcopy(layer)
        (alone(x[b:b + 1]) * backprops[b:b + 1]).sum().backward()
        out.append({n: p.grad for n, p in alone.named_parameters()})
    return out


def _sampled(layer: nn.Module, x: Tensor, backprops: Tensor) -> dict[str, Tensor]:
    got = compute_frame_conv_grad_sample(layer, [x], backprops)
    return {n: got[p] for n, p in layer.named_parameters()}


@pytest.mark.parametrize("t", [1, 3])
@pytest.mark.parametrize("case", FRAME_CONVS)
def test_frame_conv_grad_sample_equals_each_samples_gradient(case: str, t: int) -> None:
    torch.manual_seed(0)
    layer = _conv(FRAME_CONVS[case])
    assert is_frame_conv(layer)
    x = torch.randn(5, layer.in_channels, t, 11, 9, dtype=torch.float64)
    backprops = torch.randn_like(layer(x))
    got, want = _sampled(layer, x, backprops), _by_hand(layer, x, backprops)
    for name, gs in got.items():
        assert gs.shape == (5, *dict(layer.named_parameters())[name].shape)
        for b in range(5):
            assert torch.allclose(gs[b], want[b][name], atol=1e-10), f"{case} {name} sample {b}"


@pytest.mark.parametrize("kernel,padding", [((3, 3, 3), (1, 1, 1)), ((1, 3, 3), (1, 1, 1))])
def test_other_conv3d_kernels_fall_back_to_opacus_and_stay_exact(kernel, padding) -> None:
    """Kernels that mix frames (depth 3) or pad in time are not per-frame: Opacus' sampler serves them."""
    torch.manual_seed(0)
    layer = nn.Conv3d(2, 3, kernel, padding=padding, bias=True).double()
    assert not is_frame_conv(layer)
    x = torch.randn(4, 2, 3, 7, 7, dtype=torch.float64)
    backprops = torch.randn_like(layer(x))
    got, want = _sampled(layer, x, backprops), _by_hand(layer, x, backprops)
    for name, gs in got.items():
        for b in range(4):
            assert torch.allclose(gs[b], want[b][name], atol=1e-10), f"{name} sample {b}"


def test_comparison_catches_a_sampler_that_mixes_samples() -> None:
    """Negative control: the same check fails for per-sample gradients rolled by one sample."""
    torch.manual_seed(0)
    layer = _conv(FRAME_CONVS["block-3x3"])
    x = torch.randn(3, 3, 2, 8, 8, dtype=torch.float64)
    backprops = torch.randn_like(layer(x))
    rolled = _sampled(layer, x, backprops)["weight"].roll(1, dims=0)
    want = _by_hand(layer, x, backprops)
    assert not any(torch.allclose(rolled[b], want[b]["weight"], atol=1e-10) for b in range(3))


def test_privacy_registers_the_frame_conv_sampler_with_opacus() -> None:
    assert GradSampleModule.GRAD_SAMPLERS[nn.Conv3d] is compute_frame_conv_grad_sample


CLIP = 0.05  # small enough that the clipping is active


def test_clipped_mean_of_a_small_cnn_rnn_equals_the_per_sample_computation(monkeypatch) -> None:
    torch.manual_seed(0)
    model = create_model("cnn_rnn", dropout=0.0, channels=(8, 16), hidden_size=8, image_size=16)
    x, y = torch.randn(5, 3, 1, 16, 16), torch.tensor([0, 1, 2, 3, 6])
    expected = clipped_mean_by_hand(copy.deepcopy(model), x, y, clip=CLIP)
    calls = []
    monkeypatch.setitem(GradSampleModule.GRAD_SAMPLERS, nn.Conv3d,
                        lambda *a: calls.append(1) or compute_frame_conv_grad_sample(*a))
    parts = make_private(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
                         loader=index_loader(5, batch_size=5, seed=0), noise_multiplier=1e-12,
                         max_grad_norm=CLIP, ledger=PrivacyLedger(), grad_sample_mode="hooks")
    parts.optimizer.expected_batch_size = len(x)
    parts.optimizer.zero_grad()
    F.cross_entropy(parts.model(x), y).backward()
    parts.optimizer.pre_step()
    assert len(calls) == 2  # both conv blocks went through fedfer's sampler
    for (name, p), e in zip(parts.model.named_parameters(), expected):
        assert torch.allclose(p.grad, e, atol=1e-6, rtol=1e-4), name


def _frame_norm(t: int) -> tuple[FrameGroupNorm, Tensor, Tensor]:
    torch.manual_seed(0)
    layer = FrameGroupNorm(2, 6).double()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.normal_()
    x = torch.randn(4, 6, t, 5, 7, dtype=torch.float64) * torch.linspace(0.5, 3.0, t, dtype=torch.float64)[:, None, None]
    return layer, x, torch.randn(4, 6, t, 5, 7, dtype=torch.float64)


@pytest.mark.parametrize("t", [1, 3])
def test_frame_group_norm_grad_sample_equals_each_samples_gradient(t: int) -> None:
    layer, x, backprops = _frame_norm(t)
    got = compute_frame_group_norm_grad_sample(layer, [x], backprops)
    want = _by_hand(layer, x, backprops)
    for name, p in layer.named_parameters():
        for b in range(4):
            assert torch.allclose(got[p][b], want[b][name], atol=1e-10), f"{name} sample {b}"


def test_opacus_stock_group_norm_sampler_is_wrong_for_per_frame_norm() -> None:
    """Control: the comparison above catches a sampler normalising over all frames (Opacus' GroupNorm one)."""
    from opacus.grad_sample.group_norm import compute_group_norm_grad_sample

    layer, x, backprops = _frame_norm(3)
    stock = compute_group_norm_grad_sample(layer, [x], backprops)[layer.weight]
    want = _by_hand(layer, x, backprops)
    assert not any(torch.allclose(stock[b], want[b]["weight"], atol=1e-6) for b in range(4))


def test_the_frame_group_norm_rules_are_registered_with_the_norm_itself() -> None:
    from torch.nn.utils._expanded_weights.expanded_weights_impl import HANDLED_FUNCTIONS

    assert GradSampleModule.GRAD_SAMPLERS[FrameGroupNorm] is compute_frame_group_norm_grad_sample
    assert HANDLED_FUNCTIONS[frame_group_norm] is FrameGroupNormPerSampleGrad
    # a fresh process that builds a model and checks it for DP without importing fer_models.privacy (what
    # `fedfer simulate` does before any training): the check passes
    code = ("import sys; from fer_models.models import create_model, check_private_compatible; "
            "check_private_compatible(create_model('cnn_rnn')); "
            "assert 'fer_models.privacy.grad_samplers' not in sys.modules; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "ok", proc.stderr[-2000:]


def _clipped_step(mode: str, t: int) -> tuple[list[tuple[str, Tensor]], list[Tensor]]:
    torch.manual_seed(0)
    model = create_model("cnn_rnn", dropout=0.0, channels=(8, 16), hidden_size=8, image_size=16)
    x, y = torch.randn(5, t, 1, 16, 16), torch.tensor([0, 1, 2, 3, 6])
    expected = clipped_mean_by_hand(copy.deepcopy(model), x, y, clip=CLIP)
    parts = make_private(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
                         loader=index_loader(5, batch_size=5, seed=0), noise_multiplier=1e-12,
                         max_grad_norm=CLIP, ledger=PrivacyLedger(), grad_sample_mode=mode)
    parts.optimizer.expected_batch_size = len(x)
    parts.optimizer.zero_grad()
    F.cross_entropy(parts.model(x), y).backward()
    parts.optimizer.pre_step()
    return [(n, p.grad) for n, p in parts.model.named_parameters()], expected


@pytest.mark.parametrize("mode", ["hooks", "ew", "functorch"])
def test_clipped_mean_over_several_frames_equals_the_per_sample_computation_in_every_mode(mode: str) -> None:
    got, expected = _clipped_step(mode, t=3)
    for (name, g), e in zip(got, expected):
        assert torch.allclose(g, e, atol=1e-6, rtol=1e-4), f"{mode}: {name}"


def test_ew_mode_needs_the_frame_group_norm_rule(monkeypatch) -> None:
    """Control: without fedfer's rule, ExpandedWeights refuses the per-frame norm instead of guessing."""
    from torch.nn.utils._expanded_weights.expanded_weights_impl import HANDLED_FUNCTIONS

    monkeypatch.delitem(HANDLED_FUNCTIONS, frame_group_norm)
    with pytest.raises(RuntimeError, match="cannot handle function frame_group_norm"):
        _clipped_step("ew", t=2)
