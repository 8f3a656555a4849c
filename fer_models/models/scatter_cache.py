"""A process-wide memo of the fixed scattering transform: a frame's maps are computed once.

The ScatterNet front-end has no trainable parameters, so the maps of a given frame never change; on
2 cores the transform costs about as much as the rest of a training step, and every round, epoch and
evaluation recomputes it for the same images. The memo keys each frame by its content (a 128-bit
BLAKE2b digest of its values, their dtype and shape, and the transform's J, L and input size), so an
augmented or otherwise changed frame is simply a miss, never served stale maps. It lives in the process (a Ray
worker, a SuperNode's ClientApp process, the ServerApp), across the models each round builds, and is
bounded in bytes: once full it keeps what it has and computes the rest as before (training passes over
the same images in the same cycle every epoch, so evicting would turn every later lookup into a miss).
A 48x48 frame's 81 maps of 12x12 take 46.7 KB: the default bound, 2048 MB, holds ~45,000 frames (all of
FER2013); ``FEDFER_SCATTER_CACHE_MB`` sets it (0 turns the memo off).
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable

import torch
from torch import Tensor

ENV_MB = "FEDFER_SCATTER_CACHE_MB"
DEFAULT_MB = 2048


def _budget_bytes() -> int:
    raw = os.environ.get(ENV_MB, str(DEFAULT_MB))
    try:
        mb = float(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_MB}={raw!r}: expected a number of megabytes (0 turns the scattering memo off)") from exc
    if mb < 0:
        raise ValueError(f"{ENV_MB}={raw!r}: expected >= 0 megabytes (0 turns the scattering memo off)")
    return int(mb * 2 ** 20)


class MapMemo:
    """frame content -> scattering maps, bounded in bytes (full: new maps are not kept)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._maps: dict[bytes, Tensor] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._maps)

    def maps(self, frames: Tensor, *, tag: bytes, compute: Callable[[Tensor], Tensor]) -> Tensor:
        """Maps of ``frames`` ``(N, H, W)``: ``compute`` runs once, on the frames not seen before."""
        if self.max_bytes <= 0:
            return compute(frames)
        flat = frames.detach().to("cpu").contiguous()
        tag = tag + f" {flat.dtype} {tuple(flat.shape[1:])} ".encode()  # float64 maps never serve a float32 model
        keys = [hashlib.blake2b(tag + row.numpy().tobytes(), digest_size=16).digest() for row in flat]
        missing = [i for i, k in enumerate(keys) if k not in self._maps]
        fresh = dict(zip(missing, compute(frames[missing]))) if missing else {}
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        for i, value in fresh.items():
            self._store(keys[i], value.detach().to("cpu").clone())
        return torch.stack([fresh[i] if i in fresh else self._maps[k].to(frames.device) for i, k in enumerate(keys)])

    def _store(self, key: bytes, value: Tensor) -> None:
        size = value.numel() * value.element_size()
        if key in self._maps or self.bytes + size > self.max_bytes:  # the same frame twice in a batch; full
            return
        self._maps[key] = value
        self.bytes += size


_MEMO: MapMemo | None = None


def memo() -> MapMemo:
    """This process's memo (created on first use with the bound from ``FEDFER_SCATTER_CACHE_MB``)."""
    global _MEMO
    if _MEMO is None:
        _MEMO = MapMemo(_budget_bytes())
    return _MEMO
