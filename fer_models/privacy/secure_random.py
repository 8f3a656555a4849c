"""Randomness the server cannot search: a keystream cipher keyed by 256 bits of OS entropy.

DP noise and Poisson sampling protect privacy only if nobody can regenerate them. torch's CPU
generator cannot carry such a secret: ``torch.Generator().manual_seed(s)`` keeps only the low 32
bits of ``s`` (``manual_seed(s)`` and ``manual_seed(s % 2**32)`` draw the same numbers), so a
server that knows the public run settings can scan 2^32 seeds for the one whose noise explains a
client's update, and subtract it. Opacus' ``secure_mode`` would use ``torchcsprng``, which is not
built for current torch.

:class:`SecureRandom` is AES-256 in counter mode (OpenSSL, through the ``cryptography`` package
that Flower already depends on) keyed with 32 bytes from ``os.urandom``: its whole state is the
256-bit key and a 128-bit block counter, and its output is computationally indistinguishable from
random to anyone without the key. From the keystream:

- uniforms on (0, 1) with 53 random bits each (``(k + 1/2) / 2^53``: never 0 or 1);
- Gaussians by the inverse normal CDF (``torch.special.ndtri``) in float64, each noise value the
  sum of four draws divided by two, as Opacus' secure mode does against floating-point attacks
  (Holohan et al. 2021, arXiv:2107.10138 section 5.1; Opacus ``_generate_noise``);
- Bernoulli masks for Poisson sampling (one uniform per sample, compared with the rate).

The transform runs on the device asked for (the parameters' device), the keystream on the CPU.
Plain PyTorch + ``cryptography``: no Flower here.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

#: Bytes of OS entropy behind every source (256 bits).
KEY_BYTES = 32
#: Gaussian draws summed (and divided by their square root) per noise value, as Opacus' secure mode.
DRAWS_PER_NOISE = 4
_MANTISSA = 53
_BLOCK = 16  # AES block bytes


def keystream(key: bytes):
    """AES-256 in counter mode keyed by ``key`` (32 bytes), from a zero counter block: one key, one stream."""
    return Cipher(algorithms.AES(key), modes.CTR(bytes(_BLOCK))).encryptor()


def keystream_words(stream, n: int) -> np.ndarray:
    """The next ``n`` little-endian uint64 words of ``stream`` (zeros encrypted into a preallocated buffer:
    ``update_into`` is several times faster than ``update`` for megabytes)."""
    buf = np.empty(8 * n + _BLOCK, dtype=np.uint8)  # update_into wants a block of slack
    stream.update_into(np.zeros(8 * n, dtype=np.uint8), buf)
    return buf[:8 * n].view("<u8")


class SecureRandom:
    """A cryptographic random source: AES-256-CTR keyed with ``key`` (default: 32 fresh bytes of ``os.urandom``).

    Each instance is one keystream; every draw consumes the next bytes of it. Pass ``key`` only to
    reproduce a stream in a test (the product never does: see :func:`fer_models.privacy.dp_sgd.secret_source`).
    """

    def __init__(self, *, key: bytes | None = None) -> None:
        key = os.urandom(KEY_BYTES) if key is None else bytes(key)
        if len(key) != KEY_BYTES:
            raise ValueError(f"SecureRandom needs a {KEY_BYTES}-byte key ({8 * KEY_BYTES} bits), got {len(key)} bytes")
        # A fresh key per instance, so the all-zero initial counter block is never reused under one key.
        self._stream = keystream(key)
        self.bytes_drawn = 0

    def words(self, n: int) -> torch.Tensor:
        """``n`` uniformly random int64 words from the keystream (CPU)."""
        if n < 0:
            raise ValueError(f"cannot draw {n} words")
        self.bytes_drawn += 8 * n
        return torch.from_numpy(keystream_words(self._stream, n).view(np.int64))

    def uniform(self, n: int, *, device: torch.device | str = "cpu") -> torch.Tensor:
        """``n`` float64 uniforms on the open interval (0, 1), 53 random bits each, on ``device``."""
        # The arithmetic shift keeps a word's top 53 bits as a signed integer in [-2^52, 2^52); shifted by 2^52
        # and half a step, then scaled, it is (k + 1/2) / 2^53 for a uniform k in [0, 2^53).
        signed = (self.words(n) >> (64 - _MANTISSA)).to(device=device, dtype=torch.float64)
        return signed.add_(2.0 ** (_MANTISSA - 1) + 0.5).mul_(2.0 ** -_MANTISSA)

    def normal(self, shape: torch.Size | tuple[int, ...], *, std: float, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Gaussian noise N(0, std^2) of ``shape``: the sum of four float64 draws / 2, cast to ``dtype``."""
        numel = 1
        for s in shape:
            numel *= int(s)
        if std == 0 or numel == 0:
            return torch.zeros(shape, device=device, dtype=dtype)
        draws = torch.special.ndtri(self.uniform(DRAWS_PER_NOISE * numel, device=device))
        total = draws.view(DRAWS_PER_NOISE, numel).sum(0).mul_(std / DRAWS_PER_NOISE ** 0.5)
        return total.to(dtype).view(shape)

    def bernoulli(self, n: int, *, p: float) -> torch.Tensor:
        """A bool mask of ``n`` independent draws, each True with probability ``p`` (to 2^-53)."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"a probability must lie in [0, 1], got {p}")
        return self.uniform(n) < p
