"""Opacus per-sample gradients of every model equal the gradients of each sample computed alone.

This is the property differential privacy rests on: the per-sample gradient Opacus clips must be
the gradient of one *clip* (all its frames), not of one frame and not mixed with other clips.
Computed in float64 with atol=1e-5, rtol=1e-4 (float32 passes the same tolerances for these
models too; float64 just leaves no doubt that a failure is a real mismatch).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from opacus import GradSampleModule
from torch import Tensor, nn

import fer_models.privacy.grad_samplers  # noqa: F401  the Conv3d sampler training uses (registered by fer_models.privacy.dp_sgd)
from fer_models.models import create_model, list_models

VARIANTS = [(name, {}) for name in list_models()] + [
    ("cnn_rnn", {"rnn": "lstm"}),
    ("cnn_rnn", {"temporal_attention": True}),
    ("cnn_rnn", {"readout": "mean"}),
    ("cnn_rnn", {"frame_readout": "flatten"}),  # the layout-keeping frame embedding (frame-readout=flatten)
] + [(name, {"activation": "tanh"}) for name in list_models()] + [  # the DP recipe's activation
    (name, {"frontend": "scatter", "activation": "tanh"}) for name in list_models()] + [  # ... and its ScatterNet
    (name, {"stage": stage, "channels": (8, 16, 16, 24)}) for name in list_models()  # the stronger encoders'
    for stage in ("double", "residual")]  # stages (VGG, residual with a 1x1 shortcut), at small widths
IDS = [name + "".join(f"-{k}={v}" for k, v in kw.items()) for name, kw in VARIANTS]
BATCH = 4
pytestmark = [pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning"),
              pytest.mark.usefixtures("one_thread")]




def _batch(t: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(t)
    x = torch.randn(BATCH, t, 1, 48, 48, generator=g, dtype=torch.float64)
    return x, torch.tensor([0, 3, 6, 3])


def _reference_grads(model: nn.Module, x: Tensor, y: Tensor) -> list[dict[str, Tensor]]:
    """Gradient of each sample's loss, each computed alone (batch of 1) on a fresh copy."""
    grads = []
    for i in range(x.shape[0]):
        alone = copy.deepcopy(model)
        F.cross_entropy(alone(x[i : i + 1]), y[i : i + 1], reduction="sum").backward()
        grads.append({n: p.grad.detach().clone() for n, p in alone.named_parameters()})
    return grads


def per_sample_mismatches(model: nn.Module, x: Tensor, y: Tensor, *, loss_reduction: str = "sum") -> list[str]:
    """Names of parameters whose Opacus ``grad_sample`` differs from the per-sample reference."""
    reference = _reference_grads(model, x, y)
    wrapped = copy.deepcopy(model)
    gsm = GradSampleModule(wrapped, batch_first=True, loss_reduction=loss_reduction)
    F.cross_entropy(gsm(x), y, reduction=loss_reduction).backward()
    bad = []
    for name, p in wrapped.named_parameters():
        gs = getattr(p, "grad_sample", None)
        if gs is None or gs.shape != (x.shape[0], *p.shape):
            bad.append(f"{name}: grad_sample shape {None if gs is None else tuple(gs.shape)}")
            continue
        for i in range(x.shape[0]):
            if not torch.allclose(gs[i], reference[i][name], atol=1e-5, rtol=1e-4):
                bad.append(f"{name}[sample {i}]")
    gsm._close()
    return bad


@pytest.mark.parametrize("name,kwargs", VARIANTS, ids=IDS)
@pytest.mark.parametrize("t", [1, 3])
def test_grad_sample_matches_per_sample_gradients(name: str, kwargs: dict, t: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, dropout=0.0, **kwargs).double()
    x, y = _batch(t)
    assert per_sample_mismatches(model, x, y) == []


@pytest.mark.parametrize("name", list_models())
def test_grad_sample_with_mean_reduction(name: str) -> None:
    """Opacus' default ``loss_reduction="mean"`` with a mean loss gives the same per-sample grads."""
    torch.manual_seed(1)
    model = create_model(name, dropout=0.0).double()
    x, y = _batch(3)
    assert per_sample_mismatches(model, x, y, loss_reduction="mean") == []


@pytest.mark.parametrize("kwargs", [{}, {"rnn": "lstm", "readout": "mean"}], ids=["gru", "lstm-mean"])
def test_cnn_rnn_long_clips_use_the_per_frame_norm_sampler_and_stay_per_clip(kwargs: dict, monkeypatch) -> None:
    """Clip length 5: every block's per-frame GroupNorm goes through fedfer's sampler, and each clip's
    gradient (its frames normalised one by one) is what Opacus returns."""
    from fer_models.models.frame_norm import FrameGroupNorm, compute_frame_group_norm_grad_sample

    calls = []
    monkeypatch.setitem(GradSampleModule.GRAD_SAMPLERS, FrameGroupNorm,
                        lambda *a: calls.append(1) or compute_frame_group_norm_grad_sample(*a))
    torch.manual_seed(2)
    model = create_model("cnn_rnn", dropout=0.0, channels=(8, 16), **kwargs).double()
    x, y = _batch(5)
    assert per_sample_mismatches(model, x, y) == []
    assert len(calls) == 2  # both blocks


class FramesFoldedIntoBatch(nn.Module):
    """WRONG on purpose: folds frames into the batch before a Conv2d (per-frame gradients)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.head = nn.Linear(8, 7)

    def forward(self, x: Tensor) -> Tensor:
        b, t = x.shape[:2]
        feats = F.relu(self.conv(x.flatten(0, 1))).mean(dim=(2, 3))  # (B*T, 8)
        return self.head(feats.reshape(b, t, -1).mean(dim=1))


def test_negative_control_folded_frames_are_caught() -> None:
    """The check above can fail: a model folding T into B does not give per-clip gradients."""
    torch.manual_seed(0)
    model = FramesFoldedIntoBatch().double()
    x, y = _batch(3)
    try:
        bad = per_sample_mismatches(model, x, y)
    except (RuntimeError, ValueError):
        return  # Opacus refusing the inconsistent batch sizes also counts as caught
    # Opacus 1.6 silently returns B*T "per-sample" gradients for the conv: per frame, not per clip.
    assert any(name.startswith("conv.") for name in bad), bad


class MixesSamples(nn.Module):
    """WRONG on purpose: subtracts a batch statistic (like BatchNorm does), in a parameter-free op."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 4, (1, 3, 3), padding=(0, 1, 1))
        self.head = nn.Linear(4, 7)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x.permute(0, 2, 1, 3, 4)).mean(dim=(2, 3, 4))  # (B, 4)
        h = h - 0.5 * h.mean(dim=0, keepdim=True)  # leaks other samples into each output
        return self.head(h)


def test_negative_control_sample_mixing_is_caught() -> None:
    """Shapes are right but values are not: the comparison itself detects the leak."""
    torch.manual_seed(0)
    model = MixesSamples().double()
    x, y = _batch(3)
    bad = per_sample_mismatches(model, x, y)
    assert bad and all("shape" not in b for b in bad), bad


def test_negative_control_with_one_frame_is_harmless() -> None:
    """Sanity check of the control: with T=1 folding changes nothing, so it must match."""
    torch.manual_seed(0)
    model = FramesFoldedIntoBatch().double()
    x, y = _batch(1)
    assert per_sample_mismatches(model, x, y) == []
