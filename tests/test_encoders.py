"""The named frame encoders (``encoder=small|vgg|resnet|resnet-wide``): their sizes, that they encode every
frame alone, and how a run config chooses them. Their per-sample gradients are checked with every model's in
tests/test_per_sample_gradients.py and tests/test_dp_modes.py."""

from __future__ import annotations

import pytest
import torch

from fer_models.config import ConfigError, RunConfig
from fer_models.models import create_model, list_models
from fer_models.models.frame_norm import FrameGroupNorm
from fer_models.models.from_config import build_model
from fer_models.models.registry import param_count
from fer_models.models.stages import ENCODERS, ResidualFrameBlock

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", list_models())
def test_the_named_encoders_have_the_sizes_their_help_gives(name: str) -> None:
    sizes = {encoder: param_count(name, **options) for encoder, options in ENCODERS.items()}
    assert sizes["small"] == create_model(name).DEFAULT_PARAM_COUNT
    assert 1.1e6 <= sizes["vgg"] <= 1.3e6 and 1.1e6 <= sizes["resnet"] <= 1.3e6  # "about 1-5M" (issue 32)
    assert 4.8e6 <= sizes["resnet-wide"] <= 5.0e6


@pytest.mark.parametrize("stage", ["double", "residual"])
def test_the_stronger_stages_encode_every_frame_alone(stage: str) -> None:
    torch.manual_seed(0)
    model = create_model("cnn_rnn", stage=stage, channels=(8, 16, 16, 24), dropout=0.0).eval()
    with torch.no_grad():  # non-trivial affine parameters, as after training
        for norm in (m for m in model.modules() if isinstance(m, FrameGroupNorm)):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0.0, 0.2)
    clip = torch.randn(2, 4, 1, 48, 48, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        in_clip = model.encoder(clip)
        assert in_clip.shape == (2, 4, 24)
        for t in range(4):
            assert (in_clip[:, t] - model.encoder(clip[:, t:t + 1])[:, 0]).abs().max() <= 1e-5
        assert model(clip).shape == (2, 7)


def test_a_residual_block_adds_its_input_through_a_shortcut_only_where_the_width_changes() -> None:
    widen, keep = ResidualFrameBlock(8, 16, norm_groups=8, pool=None), ResidualFrameBlock(16, 16, norm_groups=8, pool=None)
    assert isinstance(widen.shortcut, torch.nn.Sequential) and isinstance(keep.shortcut, torch.nn.Identity)
    x = torch.randn(2, 16, 1, 6, 6)
    with torch.no_grad():
        for conv in (keep.conv1, keep.conv2):
            conv.weight.zero_()  # the residual branch gives 0 (its GroupNorm bias is 0): relu(x) is left
        assert torch.allclose(keep(x), torch.relu(x))


def test_a_run_config_chooses_the_encoder_and_refuses_it_behind_the_scatter_front_end() -> None:
    model = build_model(RunConfig.from_flat({"encoder": "resnet", "model": "cnn"}))
    assert sum(isinstance(m, ResidualFrameBlock) for m in model.modules()) == 4
    assert model.param_count == param_count("cnn", **ENCODERS["resnet"])
    with pytest.raises(ConfigError, match="frontend=scatter.*set frontend=pixels"):
        RunConfig.from_flat({"encoder": "vgg", "frontend": "scatter"})
    with pytest.raises(ConfigError, match="tuned DP recipe: add dp-recipe=none"):
        RunConfig.from_flat({"encoder": "vgg", "dp": "sample", "target-epsilon": 8.0})
    assert RunConfig.from_flat({"encoder": "vgg", "dp": "sample", "target-epsilon": 8.0, "dp-recipe": "none"})


@pytest.mark.parametrize("model_name", ["cnn", "cnn_rnn"])
def test_the_flattened_frame_readout_keeps_where_each_feature_is_and_the_run_config_chooses_it(model_name) -> None:
    cfg = RunConfig.from_flat({"model": model_name, "frame-readout": "flatten"})
    model = build_model(cfg).eval()
    clip = torch.randn(2, 3, 1, 48, 48, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        maps = model.encoder.feature_maps(clip)  # (B, C, T, 3, 3)
        frames = model.encoder(clip)
    b, c, t, h, w = maps.shape
    assert (h, w) == (3, 3) and frames.shape == (b, t, c * h * w)
    for i in range(b):
        for j in range(t):  # frame j of clip i: its own maps, channel by channel, row by row
            assert torch.equal(frames[i, j].view(c, h, w), maps[i, :, j])
    mean = build_model(RunConfig.from_flat({"model": model_name})).eval()
    assert mean.encoder.out_dim == c and model.encoder.out_dim == c * 9
    with torch.no_grad():
        assert torch.allclose(mean.encoder(clip), mean.encoder.feature_maps(clip).mean(dim=(3, 4)).transpose(1, 2))
    assert build_model(RunConfig.from_flat({"model": model_name, "frontend": "scatter"})).encoder.flatten  # auto
    with pytest.raises(ConfigError, match="frame-readout"):
        RunConfig.from_flat({"frame-readout": "max"})
