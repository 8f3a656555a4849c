"""Model registry and model behaviour: shapes, gradients, Opacus validation, attention maps."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from opacus.validators import ModuleValidator

from fer_models.common.labels import NUM_CLASSES
from fer_models.models import (
    InvalidClipError,
    ModelOptionError,
    UnknownModelError,
    create_model,
    list_models,
    model_options,
    param_count,
)
from fer_models.models.registry import _REGISTRY

VARIANTS = [(name, {}) for name in list_models()] + [
    ("cnn_rnn", {"rnn": "lstm"}),
    ("cnn_rnn", {"temporal_attention": True}),
    ("cnn_rnn", {"rnn": "lstm", "temporal_attention": True}),
    ("cnn_rnn", {"readout": "mean"}),
]
IDS = [name + "".join(f"-{k}={v}" for k, v in kw.items()) for name, kw in VARIANTS]


pytestmark = pytest.mark.usefixtures("one_thread")


def _clips(b: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, t, 1, 48, 48, generator=torch.Generator().manual_seed(seed))


def test_registry_lists_the_three_models() -> None:
    assert list_models() == sorted(list_models())
    assert {"cnn", "cnn_rnn", "cnn_attention"} <= set(list_models())


@pytest.mark.parametrize("name,kwargs", VARIANTS, ids=IDS)
@pytest.mark.parametrize("t", [1, 3])
def test_forward_backward(name: str, kwargs: dict, t: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    x, y = _clips(4, t), torch.tensor([0, 3, 6, 2])
    logits = model(x)
    assert logits.shape == (4, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} received no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"


@pytest.mark.parametrize("name,kwargs", VARIANTS, ids=IDS)
def test_opacus_validator_accepts(name: str, kwargs: dict) -> None:
    assert ModuleValidator.validate(create_model(name, **kwargs), strict=False) == []


@pytest.mark.parametrize("name", list_models())
def test_param_count_matches_docstring(name: str) -> None:
    cls = _REGISTRY[name]
    model = create_model(name)
    assert model.param_count == cls.DEFAULT_PARAM_COUNT == param_count(name)
    assert f"{cls.DEFAULT_PARAM_COUNT:,}" in inspect.getdoc(cls)


def test_unknown_model_lists_known_models() -> None:
    with pytest.raises(UnknownModelError) as err:
        create_model("resnet9000")
    assert "resnet9000" in str(err.value)
    for known in list_models():
        assert known in str(err.value)
    assert isinstance(err.value, ValueError)


def test_unknown_option_names_model_and_options() -> None:
    with pytest.raises(ModelOptionError) as err:
        create_model("cnn", rnn="gru")
    msg = str(err.value)
    assert "'cnn'" in msg and "rnn" in msg
    for option in model_options("cnn"):
        assert option in msg


def test_bad_option_values_fail_early() -> None:
    with pytest.raises(ValueError, match="rnn must be one of"):
        create_model("cnn_rnn", rnn="transformer")
    with pytest.raises(ValueError, match="temporal_attention"):
        create_model("cnn_rnn", temporal_attention=True, readout="mean")
    with pytest.raises(ValueError, match="divisible by norm_groups"):
        create_model("cnn", channels=(12, 24))
    with pytest.raises(ValueError, match="too small"):
        create_model("cnn", image_size=4)


def test_custom_sizes() -> None:
    model = create_model("cnn_rnn", num_classes=3, image_size=32, channels=(8, 16), hidden_size=16)
    assert model(torch.randn(2, 5, 1, 32, 32)).shape == (2, 3)


@pytest.mark.parametrize(
    "bad", [torch.randn(2, 1, 48, 48), torch.randn(2, 1, 3, 48, 48), torch.randn(2, 1, 1, 64, 64)]
)
def test_bad_input_shape_is_refused(bad: torch.Tensor) -> None:
    with pytest.raises(InvalidClipError):
        create_model("cnn")(bad)


def test_static_image_equals_repeated_frames_for_cnn() -> None:
    """Frames are averaged: a clip of T identical frames gives the T=1 logits."""
    model = create_model("cnn").eval()
    x = _clips(3, 1)
    torch.testing.assert_close(model(x), model(x.expand(3, 4, 1, 48, 48)), atol=1e-5, rtol=1e-4)


def test_samples_are_independent() -> None:
    """No layer mixes samples of a batch (a BatchNorm would fail this)."""
    for name, kwargs in VARIANTS:
        model = create_model(name, dropout=0.0, **kwargs)
        x = _clips(4, 3)
        torch.testing.assert_close(model(x)[1:2], model(x[1:2]), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("t", [1, 3])
def test_attention_map_is_a_distribution(t: int) -> None:
    model = create_model("cnn_attention")
    x = _clips(2, t)
    amap = model.attention_map(x)
    assert amap.shape == (2, t, 6, 6)
    assert (amap >= 0).all()
    torch.testing.assert_close(amap.sum(dim=(-2, -1)), torch.ones(2, t))
    up = model.attention_map(x, upsample=True)
    assert up.shape == (2, t, 48, 48)
    torch.testing.assert_close(up.sum(dim=(-2, -1)), torch.ones(2, t))


def test_temporal_weights_sum_to_one() -> None:
    model = create_model("cnn_rnn", temporal_attention=True)
    w = model.temporal_weights(_clips(2, 4))
    assert w.shape == (2, 4)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(2))
    with pytest.raises(RuntimeError, match="temporal_attention"):
        create_model("cnn_rnn").temporal_weights(_clips(2, 4))


def test_the_tuned_dp_recipe_builds_scatter_tanh_models_and_plain_runs_keep_pixels_and_relu():
    from fer_models.config import RunConfig
    from fer_models.models.from_config import build_model
    from fer_models.models.scatter import ScatterFrontend

    kinds = lambda m: {type(mod).__name__ for mod in m.modules()} & {"ReLU", "Tanh", "ScatterFrontend"}  # noqa: E731
    assert kinds(build_model(RunConfig.from_flat({}))) == {"ReLU"}
    assert kinds(build_model(RunConfig.from_flat({"dp": "sample", "target-epsilon": 8.0}))) == {"Tanh",
                                                                                                ScatterFrontend.__name__}
    assert kinds(build_model(RunConfig.from_flat({"dp": "sample", "target-epsilon": 8.0, "dp-recipe": "none"}))) == {"ReLU"}
    with pytest.raises(ValueError, match="activation must be one of"):
        create_model("cnn", activation="gelu")


# --- the ScatterNet front-end ---------------------------------------------------------------------

@pytest.mark.parametrize("name", list_models())
def test_scatter_models_train_only_the_layers_after_the_fixed_transform_and_send_no_filters(name):
    model = create_model(name, frontend="scatter")
    front = model.encoder.frontend
    assert not list(front.parameters())  # nothing of the transform is trained (or privatised)
    assert not any(k.startswith("encoder.frontend") for k in model.state_dict())  # filters never leave
    twin = create_model(name, frontend="scatter")
    twin.load_state_dict(model.state_dict())
    x = _clips(2, 3)
    model.eval(), twin.eval()
    torch.testing.assert_close(model(x), twin(x))
    maps = front(x.permute(0, 2, 1, 3, 4))  # (B, C, T, H, W) -> (B, 81, T, 12, 12)
    assert maps.shape == (2, 81, 3, 12, 12)


def test_scatter_frame_embedding_is_the_flattened_maps_of_each_frame():
    """Not their spatial mean: position on the face (mouth below eyes) stays in the embedding."""
    model = create_model("cnn", frontend="scatter").eval()
    x = _clips(2, 3)
    maps = model.encoder.feature_maps(x)  # (B, D, T, 3, 3)
    emb = model.encoder(x)
    assert model.encoder.out_dim == 64 * 3 * 3 and emb.shape == (2, 3, 64 * 3 * 3)
    torch.testing.assert_close(emb.reshape(2, 3, 64, 3, 3), maps.permute(0, 2, 1, 3, 4))


def test_scatter_front_end_refuses_sizes_and_names_it_cannot_take():
    with pytest.raises(ValueError, match="scatter front-end"):
        create_model("cnn", frontend="scatter", image_size=8)
    with pytest.raises(ValueError, match="frontend must be one of pixels, scatter"):
        create_model("cnn", frontend="wavelets")


def _with_clip_wide_norm(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose frame encoder uses the old ``nn.GroupNorm`` over ``(C/G, T, H, W)``."""
    import copy

    from fer_models.models.frame_norm import FrameGroupNorm

    old = copy.deepcopy(model)
    for block in old.encoder.blocks:
        assert type(block.norm) is FrameGroupNorm
        plain = torch.nn.GroupNorm(block.norm.num_groups, block.norm.num_channels, eps=block.norm.eps)
        plain.load_state_dict(block.norm.state_dict())
        block.norm = plain
    return old


def _trained_looking(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name, dropout=0.0, channels=(8, 16)).eval()
    with torch.no_grad():  # non-trivial affine parameters, as after training
        for block in model.encoder.blocks:
            block.norm.weight.uniform_(0.5, 1.5)
            block.norm.bias.normal_(0.0, 0.2)
    return model


@pytest.mark.parametrize("name", list_models())
def test_a_frames_embedding_does_not_depend_on_the_clips_other_frames(name: str) -> None:
    model = _trained_looking(name)
    clip = _clips(2, 4, seed=3)
    with torch.no_grad():
        alone = model.encoder(clip[:, :1])[:, 0]
        in_clip = model.encoder(clip)
        assert (in_clip[:, 0] - alone).abs().max() <= 1e-5
        assert all((in_clip[:, t] - model.encoder(clip[:, t:t + 1])[:, 0]).abs().max() <= 1e-5 for t in range(4))
        old = _with_clip_wide_norm(model).encoder  # control: statistics over all frames mix them
        assert (old(clip)[:, 0] - old(clip[:, :1])[:, 0]).abs().max() > 1e-2


@pytest.mark.parametrize("name", list_models())
def test_one_frame_clips_give_exactly_the_old_clip_wide_group_norm_output(name: str) -> None:
    """Saved models keep their parameter names and shapes, and their T=1 results bit for bit."""
    model = _trained_looking(name)
    old = _with_clip_wide_norm(model)
    assert {k: v.shape for k, v in old.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    model.load_state_dict(old.state_dict())  # a checkpoint of the old model loads as it is
    with torch.no_grad():
        assert torch.equal(model(_clips(3, 1, seed=4)), old(_clips(3, 1, seed=4)))
        assert not torch.allclose(model(_clips(3, 4, seed=4)), old(_clips(3, 4, seed=4)), atol=1e-4)
