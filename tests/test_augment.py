"""Batched seeded augmentation of clip batches (B, T, 1, H, W) in [0, 1]."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from fer_models.training.augment import POLICIES, Augmenter, _affine_grid

ONLY_FLIP = dict(flip_prob=1.0, max_shift=0, max_rotation=0.0, brightness=0.0, contrast=0.0, erase_prob=0.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(b: int = 8, t: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, t, 1, 48, 48, generator=_gen(seed))


def test_shape_dtype_and_range_preserved() -> None:
    x = _images(16, 3)
    y = Augmenter()(x, generator=_gen())
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0.0 and y.max() <= 1.0
    assert not torch.equal(x, y)
    assert torch.equal(x, _images(16, 3)), "the input must not be modified"


def test_deterministic_for_a_seeded_generator() -> None:
    x = _images(8, 2)
    aug = Augmenter()
    a, b = aug(x, generator=_gen(7)), aug(x, generator=_gen(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(x, generator=_gen(8)))


def test_none_is_identity() -> None:
    x = _images()
    assert torch.equal(Augmenter(policy="none")(x, generator=_gen()), x)


def test_unknown_policy_lists_policies() -> None:
    with pytest.raises(ValueError) as err:
        Augmenter(policy="heavy")
    for policy in POLICIES:
        assert policy in str(err.value)


@pytest.mark.parametrize("bad", [torch.rand(4, 1, 48, 48), torch.rand(2, 1, 1, 48, 48) * 2 - 0.5,
                                 torch.ones(2, 1, 1, 48, 48, dtype=torch.uint8)])
def test_bad_inputs_are_refused(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError):
        Augmenter()(bad, generator=_gen())


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="flip_prob"):
        Augmenter(flip_prob=1.5)
    with pytest.raises(ValueError, match="erase_area"):
        Augmenter(erase_area=(0.5, 0.1))
    with pytest.raises(TypeError, match="generator"):
        Augmenter()(_images(), generator=None)  # type: ignore[arg-type]


def test_frames_differ_by_default_and_match_with_same_across_frames() -> None:
    x = _images(6, 1).expand(6, 4, 1, 48, 48).contiguous()  # static images as pseudo-clips
    per_frame = Augmenter()(x, generator=_gen())
    for i in range(6):
        assert not torch.allclose(per_frame[i, 0], per_frame[i, 1])
    same = Augmenter(same_across_frames=True)(x, generator=_gen())
    for i, t in itertools.product(range(6), range(1, 4)):
        torch.testing.assert_close(same[i, t], same[i, 0], atol=1e-6, rtol=0)
    assert not torch.allclose(same[0], same[1])  # still different across samples


def test_flip_flips() -> None:
    x = _images(4, 2)
    y = Augmenter(**ONLY_FLIP)(x, generator=_gen())
    torch.testing.assert_close(y, x.flip(-1), atol=1e-5, rtol=0)
    no = Augmenter(**{**ONLY_FLIP, "flip_prob": 0.0})
    assert torch.equal(no(x, generator=_gen()), x)


def test_shift_is_an_integer_translation() -> None:
    x = _images(4, 1)
    aug = Augmenter(**{**ONLY_FLIP, "flip_prob": 0.0, "max_shift": 3})
    y = aug(x, generator=_gen())
    for i in range(4):
        inner = y[i, 0, 0, 3:-3, 3:-3]
        found = any(
            torch.allclose(inner, torch.roll(x[i, 0, 0], (dy, dx), (0, 1))[3:-3, 3:-3], atol=1e-5)
            for dy, dx in itertools.product(range(-3, 4), repeat=2)
        )
        assert found, f"sample {i} is not an integer shift of its input"


def test_erasing_fills_a_small_rectangle() -> None:
    x = _images(8, 1)
    aug = Augmenter(**{**ONLY_FLIP, "flip_prob": 0.0, "erase_prob": 1.0, "erase_area": (0.05, 0.1)})
    changed = (aug(x, generator=_gen()) != x).flatten(1).float().mean(dim=1)
    assert (changed > 0.01).all() and (changed < 0.2).all()


def test_rotation_and_jitter_change_the_image_within_range() -> None:
    x = _images(8, 1)
    aug = Augmenter(flip_prob=0.0, max_shift=0, max_rotation=10.0, brightness=0.3, contrast=0.3, erase_prob=0.0)
    y = aug(x, generator=_gen())
    assert not torch.allclose(y, x)
    assert y.min() >= 0.0 and y.max() <= 1.0


def test_fast_affine_grid_matches_torch() -> None:
    theta = torch.randn(5, 2, 3, generator=_gen())
    torch.testing.assert_close(_affine_grid(theta, 48, 40), F.affine_grid(theta, [5, 1, 48, 40], align_corners=False))
