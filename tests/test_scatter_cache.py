"""The scattering memo: the same maps as the transform, computed once per frame, never stale, bounded."""

from __future__ import annotations

import pytest
import torch

from fer_models.models import scatter_cache
from fer_models.models.scatter import ScatterFrontend
from fer_models.models.scatter_cache import MapMemo


@pytest.fixture
def fresh_memo(monkeypatch):
    memo = MapMemo(64 * 2 ** 20)
    monkeypatch.setattr(scatter_cache, "_MEMO", memo)
    return memo


class _Counted:
    """Counts the frames the scattering transform is run on (a forward hook)."""

    def __init__(self, frontend: ScatterFrontend) -> None:
        self.frames = 0
        frontend.scattering.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        self.frames += inputs[0].reshape(-1, *inputs[0].shape[-2:]).shape[0]


def test_memoized_maps_equal_the_transform_and_are_computed_once_per_frame(fresh_memo):
    frontend = ScatterFrontend(image_size=16, J=1, L=4)
    x = torch.rand(3, 1, 2, 16, 16, generator=torch.Generator().manual_seed(0))  # (B, C, T, H, W)
    with torch.no_grad():
        direct = frontend.scattering(x)  # (B, C, T, K, h, w): the transform without the memo
        expected = frontend.norm(direct.permute(0, 1, 3, 2, 4, 5).reshape(3, frontend.out_channels, 2, 8, 8))
    counted = _Counted(frontend)
    first = frontend(x)
    assert counted.frames == 6
    second = frontend(x[[2, 0]])  # other batches of the same frames: nothing recomputed
    assert counted.frames == 6 and fresh_memo.hits == 4
    torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(second, expected[[2, 0]], rtol=1e-5, atol=1e-6)


def test_a_changed_frame_is_transformed_again_never_served_stale(fresh_memo):
    frontend = ScatterFrontend(image_size=16, J=1, L=4)
    x = torch.rand(2, 1, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    frontend(x)
    y = x.clone()
    y[1, 0, 0, 5, 5] += 0.25  # one pixel of one frame
    counted = _Counted(frontend)
    out = frontend(y)
    assert counted.frames == 1  # frame 0 from the memo, the changed frame 1 transformed
    fresh = ScatterFrontend(image_size=16, J=1, L=4)
    with torch.no_grad():
        maps = fresh.scattering(y)
    torch.testing.assert_close(out, fresh.norm(maps.permute(0, 1, 3, 2, 4, 5).reshape(2, fresh.out_channels, 1, 8, 8)),
                               rtol=1e-5, atol=1e-6)


def test_another_transform_does_not_share_maps(fresh_memo):
    x = torch.rand(1, 1, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    a, b = ScatterFrontend(image_size=16, J=1, L=4), ScatterFrontend(image_size=16, J=1, L=2)
    assert a(x).shape[1] != b(x).shape[1]
    assert fresh_memo.misses == 2 and fresh_memo.hits == 0


def test_a_full_memo_keeps_what_it_has_and_computes_the_rest():
    memo = MapMemo(3 * 4 * 4)  # three maps of 4 float32 values
    compute = lambda f: f.reshape(f.shape[0], 4) * 2  # noqa: E731  (a stand-in transform: 2x2 frames -> 4 values)
    frames = torch.arange(20, dtype=torch.float32).reshape(5, 2, 2)
    memo.maps(frames[:2], tag=b"t", compute=compute)
    out = memo.maps(frames, tag=b"t", compute=compute)  # 3 new frames, room for 1
    torch.testing.assert_close(out, compute(frames))
    assert len(memo) == 3 and memo.bytes == memo.max_bytes
    before = memo.misses
    again = memo.maps(frames, tag=b"t", compute=compute)
    torch.testing.assert_close(again, compute(frames))
    assert memo.misses == before + 2  # the first three kept, the two that did not fit computed again


def test_a_zero_bound_turns_the_memo_off(monkeypatch):
    monkeypatch.setenv(scatter_cache.ENV_MB, "0")
    monkeypatch.setattr(scatter_cache, "_MEMO", None)
    memo = scatter_cache.memo()
    memo.maps(torch.zeros(2, 2, 2), tag=b"t", compute=lambda f: f.reshape(2, 4))
    assert len(memo) == 0
    monkeypatch.setattr(scatter_cache, "_MEMO", None)
    monkeypatch.setenv(scatter_cache.ENV_MB, "lots")
    with pytest.raises(ValueError, match="FEDFER_SCATTER_CACHE_MB"):
        scatter_cache.memo()


def test_the_same_frame_in_another_precision_gets_maps_of_that_precision(fresh_memo):
    frontend = ScatterFrontend(image_size=16, J=1, L=4)
    x = torch.rand(1, 1, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    assert frontend(x).dtype == torch.float32
    assert frontend.double()(x.double()).dtype == torch.float64 and fresh_memo.misses == 2
