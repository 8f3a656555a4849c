"""Batched, seeded data augmentation for clip batches ``(B, T, 1, H, W)`` in ``[0, 1]``.

Everything is tensor ops over the whole batch (one affine grid + ``grid_sample`` for
flip/shift/rotation, broadcast masks for erasing): no PIL, no Python loop over samples. Random
parameters come from the caller's ``torch.Generator`` only, so a generator state fixes the result.
Apply it *before* normalisation (pixel values in ``[0, 1]``).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor

logger = logging.getLogger(__name__)

POLICIES: tuple[str, ...] = ("none", "standard")


def _affine_grid(theta: Tensor, h: int, w: int) -> Tensor:
    """``F.affine_grid(theta, (N, C, h, w), align_corners=False)`` by broadcasting (2x faster on CPU)."""
    xs = ((torch.arange(w, device=theta.device, dtype=theta.dtype) * 2 + 1) / w - 1).view(1, 1, w)
    ys = ((torch.arange(h, device=theta.device, dtype=theta.dtype) * 2 + 1) / h - 1).view(1, h, 1)
    t = theta.view(-1, 6, 1, 1)
    gx = t[:, 0] * xs + t[:, 1] * ys + t[:, 2]
    gy = t[:, 3] * xs + t[:, 4] * ys + t[:, 5]
    return torch.stack((gx, gy), dim=-1)


class Augmenter:
    """Augment clip batches; ``Augmenter(policy="standard")(x, generator=g)``.

    ``"standard"``: random horizontal flip, integer shift (like pad + random crop), small
    rotation, brightness/contrast jitter and random erasing of a small rectangle. Parameters are
    drawn per frame (T views of a static image become T independently augmented views) unless
    ``same_across_frames=True`` (one transform per sample, applied to all its frames: real clips).
    ``"none"`` returns the input unchanged. Set an option to 0 to disable that transform.
    """

    def __init__(
        self,
        *,
        policy: str = "standard",
        same_across_frames: bool = False,
        flip_prob: float = 0.5,
        max_shift: int = 4,
        max_rotation: float = 10.0,
        brightness: float = 0.2,
        contrast: float = 0.2,
        erase_prob: float = 0.25,
        erase_area: tuple[float, float] = (0.02, 0.1),
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown augmentation policy {policy!r}; choose one of: {', '.join(POLICIES)}")
        for name, p in (("flip_prob", flip_prob), ("erase_prob", erase_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1] (got {p})")
        if max_shift < 0 or int(max_shift) != max_shift:
            raise ValueError(f"max_shift must be a non-negative number of pixels (got {max_shift})")
        if not 0.0 <= max_rotation < 90.0:
            raise ValueError(f"max_rotation must be in degrees within [0, 90) (got {max_rotation})")
        for name, v in (("brightness", brightness), ("contrast", contrast)):
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} jitter must be in [0, 1) (got {v})")
        lo, hi = erase_area
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError(
                f"erase_area must be (min, max) image-area fractions, 0 < min <= max < 1 (got {erase_area})"
            )
        self.policy = policy
        self.same_across_frames = same_across_frames
        self.flip_prob = float(flip_prob)
        self.max_shift = int(max_shift)
        self.max_rotation = float(max_rotation)
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.erase_prob = float(erase_prob)
        self.erase_area = (float(lo), float(hi))

    def __repr__(self) -> str:
        return (
            f"Augmenter(policy={self.policy!r}, same_across_frames={self.same_across_frames}, "
            f"flip_prob={self.flip_prob}, max_shift={self.max_shift}, max_rotation={self.max_rotation}, "
            f"brightness={self.brightness}, contrast={self.contrast}, erase_prob={self.erase_prob}, "
            f"erase_area={self.erase_area})"
        )

    def __call__(self, x: Tensor, *, generator: torch.Generator) -> Tensor:
        """Augmented copy of ``x`` ``(B, T, C, H, W)`` (values in ``[0, 1]``); same shape, clamped."""
        if not isinstance(generator, torch.Generator):
            raise TypeError("pass generator=torch.Generator() (seeded) so augmentation is reproducible")
        if not isinstance(x, Tensor) or x.dim() != 5 or not x.is_floating_point():
            got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"expected a float clip batch (B, T, C, H, W), got {got}; use x.unsqueeze(1) for images")
        if self.policy == "none" or x.numel() == 0:
            return x
        if x.min() < -1e-6 or x.max() > 1.0 + 1e-6:
            raise ValueError("augment pixel values in [0, 1], before normalisation (got values outside [0, 1])")
        b, t, c, h, w = x.shape
        frames = x.reshape(b * t, c, h, w)
        frames = self._geometric(frames, b, t, generator)
        frames = self._photometric(frames, b, t, generator)
        frames = self._erase(frames, b, t, generator)
        return frames.clamp(0.0, 1.0).reshape(b, t, c, h, w)

    # --- random parameters -----------------------------------------------------------------

    def _uniform(self, b: int, t: int, g: torch.Generator, device: torch.device, lo: float, hi: float) -> Tensor:
        """``(B*T,)`` uniform draws in ``[lo, hi)``: one per frame, or one per sample repeated."""
        n_t = 1 if self.same_across_frames else t
        u = torch.rand((b, n_t), generator=g, device=g.device).to(device)
        return (lo + (hi - lo) * u).expand(b, t).reshape(b * t)

    # --- transforms ------------------------------------------------------------------------

    def _geometric(self, frames: Tensor, b: int, t: int, g: torch.Generator) -> Tensor:
        """Flip + rotation + integer shift as one affine resampling."""
        if self.flip_prob == 0.0 and self.max_rotation == 0.0 and self.max_shift == 0:
            return frames
        n, _, h, w = frames.shape
        dev, dt = frames.device, frames.dtype
        flip = self._uniform(b, t, g, dev, 0.0, 1.0) < self.flip_prob
        angle = self._uniform(b, t, g, dev, -self.max_rotation, self.max_rotation) * (math.pi / 180.0)
        # integer shifts in [-max_shift, max_shift] pixels (continuous draw, floored)
        s = self.max_shift
        dx = torch.floor(self._uniform(b, t, g, dev, -s, s + 1)).clamp_(-s, s)
        dy = torch.floor(self._uniform(b, t, g, dev, -s, s + 1)).clamp_(-s, s)
        # theta maps output to input coordinates (normalised to [-1, 1]); rotate in pixel units
        # so non-square frames are not sheared: A = S^-1 R S F with S = diag(w/2, h/2).
        cos, sin = torch.cos(angle), torch.sin(angle)
        fx = torch.where(flip, -1.0, 1.0).to(dt)
        theta = torch.zeros(n, 2, 3, device=dev, dtype=dt)
        theta[:, 0, 0] = cos.to(dt) * fx
        theta[:, 0, 1] = -sin.to(dt) * (h / w)
        theta[:, 1, 0] = sin.to(dt) * (w / h) * fx
        theta[:, 1, 1] = cos.to(dt)
        theta[:, 0, 2] = (-2.0 * dx / w).to(dt)
        theta[:, 1, 2] = (-2.0 * dy / h).to(dt)
        grid = _affine_grid(theta, h, w)
        return F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _photometric(self, frames: Tensor, b: int, t: int, g: torch.Generator) -> Tensor:
        """Brightness (multiplicative) then contrast (blend with the frame mean) jitter."""
        if self.brightness == 0.0 and self.contrast == 0.0:
            return frames
        dev, dt = frames.device, frames.dtype
        bf = self._uniform(b, t, g, dev, 1.0 - self.brightness, 1.0 + self.brightness).to(dt)
        cf = self._uniform(b, t, g, dev, 1.0 - self.contrast, 1.0 + self.contrast).to(dt)
        frames = (frames * bf.view(-1, 1, 1, 1)).clamp(0.0, 1.0)
        mean = frames.mean(dim=(1, 2, 3), keepdim=True)
        return (frames - mean) * cf.view(-1, 1, 1, 1) + mean

    def _erase(self, frames: Tensor, b: int, t: int, g: torch.Generator) -> Tensor:
        """Fill a random rectangle (random grey level) in a random subset of frames."""
        if self.erase_prob == 0.0:
            return frames
        n, _, h, w = frames.shape
        dev, dt = frames.device, frames.dtype
        apply = self._uniform(b, t, g, dev, 0.0, 1.0) < self.erase_prob
        area = self._uniform(b, t, g, dev, *self.erase_area) * (h * w)
        log_ratio = self._uniform(b, t, g, dev, math.log(0.3), math.log(1 / 0.3))
        ratio = torch.exp(log_ratio)
        eh = torch.sqrt(area * ratio).round().clamp(1, h)
        ew = torch.sqrt(area / ratio).round().clamp(1, w)
        y0 = torch.floor(self._uniform(b, t, g, dev, 0.0, 1.0) * (h - eh + 1))
        x0 = torch.floor(self._uniform(b, t, g, dev, 0.0, 1.0) * (w - ew + 1))
        fill = self._uniform(b, t, g, dev, 0.0, 1.0).to(dt)
        ys = torch.arange(h, device=dev).view(1, h, 1)
        xs = torch.arange(w, device=dev).view(1, 1, w)
        mask = (
            (ys >= y0.view(-1, 1, 1)) & (ys < (y0 + eh).view(-1, 1, 1))
            & (xs >= x0.view(-1, 1, 1)) & (xs < (x0 + ew).view(-1, 1, 1))
            & apply.view(-1, 1, 1)
        )
        return torch.where(mask.unsqueeze(1), fill.view(-1, 1, 1, 1), frames)
