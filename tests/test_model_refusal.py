"""check_private_compatible refuses layers Opacus cannot handle and names them; never fixes."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from fer_models.models import PrivacyIncompatibleModelError, check_private_compatible, create_model, list_models


class WithBatchNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Linear(8, 7)


class WithGRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.temporal = nn.GRU(16, 8, batch_first=True)
        self.head = nn.Linear(8, 7)


class WithBareParameter(nn.Module):
    """An attention "query" as a bare nn.Parameter: no Opacus grad sampler."""

    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(8))
        self.head = nn.Linear(8, 7)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x * self.query)


def _refusal(model: nn.Module) -> str:
    with pytest.raises(PrivacyIncompatibleModelError) as err:
        check_private_compatible(model)
    assert isinstance(err.value, ValueError)
    return str(err.value)


def test_batchnorm_is_refused_with_its_path() -> None:
    msg = _refusal(WithBatchNorm())
    assert "features.1: BatchNorm2d" in msg and "GroupNorm" in msg


def test_gru_is_refused_with_its_path() -> None:
    msg = _refusal(WithGRU())
    assert "temporal: GRU" in msg and "DPGRU" in msg


def test_lstm_is_refused() -> None:
    model = nn.Sequential(nn.LSTM(4, 4), nn.Linear(4, 7))
    msg = _refusal(model)
    assert "0: LSTM" in msg and "DPLSTM" in msg


def test_frozen_batchnorm_is_still_refused() -> None:
    """Running statistics are computed over the whole batch even when the affine part is frozen."""
    model = WithBatchNorm()
    model.features[1].requires_grad_(False)
    assert "features.1: BatchNorm2d" in _refusal(model)


def test_bare_parameter_and_inplace_are_refused() -> None:
    msg = _refusal(WithBareParameter())
    assert "<root>: WithBareParameter" in msg and "query" in msg
    msg = _refusal(nn.Sequential(nn.Linear(4, 4), nn.ReLU(inplace=True)))
    assert "1: ReLU(inplace=True)" in msg


def test_every_problem_is_listed() -> None:
    model = nn.Sequential(WithBatchNorm(), WithGRU())
    msg = _refusal(model)
    assert "0.features.1: BatchNorm2d" in msg and "1.temporal: GRU" in msg


def test_model_is_never_fixed() -> None:
    model = WithBatchNorm()
    before = [type(m) for m in model.modules()]
    _refusal(model)
    assert [type(m) for m in model.modules()] == before


def test_not_a_module_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        check_private_compatible("cnn")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name,kwargs",
    [(n, {}) for n in list_models()] + [("cnn_rnn", {"rnn": "lstm"}), ("cnn_rnn", {"temporal_attention": True})],
)
def test_registered_models_pass(name: str, kwargs: dict) -> None:
    model = create_model(name, **kwargs)
    check_private_compatible(model)
    check_private_compatible(model.eval())  # eval mode is a runtime state, not a structural problem
