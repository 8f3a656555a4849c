"""SecAgg+ mask expansion keyed by the whole shared secret (AES-256-CTR), in place of Flower's 32-bit one.

Flower's ``pseudo_rand_gen`` (``flwr.common.secure_aggregation.secaggplus_utils``) turns a mask seed
into masks with ``np.random.RandomState(seed32)``, where ``seed32`` is the XOR of the seed's 4-byte
words: whatever the 256-bit pairwise key or self-mask seed, the mask is one of 2^32. After a dropout
the server knows every mask of a survivor's masked vector but the pairwise one shared with another
survivor; it can scan the 2^32 folded seeds for the one whose residual (masked vector minus the
known masks, mod the modulus) lies in the quantization range, and so read that survivor's update
(tests/test_secagg_mask_attack.py runs this attack on a 2^16 slice).

:func:`pseudo_rand_gen` has Flower's signature (positional: Flower's client mod and server workflow
call it so) and draws from AES-256 in counter mode keyed with ``SHA-256(DOMAIN + seed)``: the
whole seed (a 44-byte urlsafe-base64 pairwise key, a raw 32-byte seed) keys the stream, and the
tag separates these masks from any other use of the same bytes. One seed is one keystream (a zero
counter block; a key is never reused for another stream), read in the order of ``dimensions_list``,
so the two ends of a pair, and the server rebuilding a mask from key shares, derive the same masks.

Values are uniform on ``[0, num_range)``, exactly: 64-bit words are reduced mod ``num_range`` after
*rejecting* words at or above the largest multiple of ``num_range`` below 2^64 (for SecAgg+'s
modulus 2^32, a power of two, nothing is rejected; otherwise a word is rejected with probability
below ``num_range / 2^64``). Flower's own expansion draws from ``[0, num_range - 1)``; a mask only
has to be uniform mod the modulus, which this one is.

:func:`install` puts the function into a module that imported Flower's by name (the client mod's and
the server workflow's modules; client/secagg.py and server/secagg.py call it at import). Both ends
of a deployment must run it: a client masking with one expansion and a server unmasking with the
other would unmask noise. Plain numpy + ``cryptography``: no Flower here.
"""

from __future__ import annotations

import hashlib
import math
from types import ModuleType
from typing import Sequence

import numpy as np

from fer_models.privacy.secure_random import keystream, keystream_words

#: Domain-separation tag hashed in front of every seed.
DOMAIN = b"fedfer/secaggplus/mask-expansion/v1\x00"
#: The attribute Flower's modules call.
ATTRIBUTE = "pseudo_rand_gen"
_TWO64 = 1 << 64


class MaskExpansionError(ValueError):
    """A seed or range this expansion cannot serve."""


def _keystream(seed: bytes):
    return keystream(hashlib.sha256(DOMAIN + seed).digest())


def uniform_words(*, seed: bytes, num_range: int, count: int) -> np.ndarray:
    """``count`` values uniform on ``[0, num_range)`` (int64), the first ``count`` accepted words of ``seed``'s
    keystream reduced mod ``num_range`` (see module doc: rejection makes them exactly uniform)."""
    if not isinstance(seed, (bytes, bytearray)) or not seed:
        raise MaskExpansionError(f"the mask seed must be non-empty bytes, got {type(seed).__name__} "
                                 f"of length {len(seed) if hasattr(seed, '__len__') else '?'}")
    if not 2 <= int(num_range) <= 2**63:
        raise MaskExpansionError(f"num_range={num_range}: masks are int64, so it must lie in [2, 2**63]")
    num_range = int(num_range)
    limit = (_TWO64 // num_range) * num_range  # words >= limit would favour the small residues
    stream = _keystream(bytes(seed))
    kept: list[np.ndarray] = []
    missing = count
    while missing > 0:
        words = keystream_words(stream, missing)
        if limit < _TWO64:
            words = words[words < np.uint64(limit)]
        kept.append(words[:missing])
        missing -= kept[-1].size
    if not kept:
        return np.zeros(0, dtype=np.int64)
    words = np.concatenate(kept) if len(kept) > 1 else kept[0]
    if num_range & (num_range - 1) == 0:
        np.bitwise_and(words, np.uint64(num_range - 1), out=words)
    else:
        np.remainder(words, np.uint64(num_range), out=words)
    return words.view(np.int64)  # every value < num_range <= 2**63


def pseudo_rand_gen(seed: bytes, num_range: int, dimensions_list: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """Masks of the given shapes (int64, uniform on ``[0, num_range)``), keyed by all of ``seed``.

    Drop-in for Flower's function of the same name and positional signature; a scalar shape ``()`` gives
    a 0-d int64 array, as Flower's does.
    """
    shapes = [tuple(int(d) for d in dims) for dims in dimensions_list]
    sizes = [math.prod(s) for s in shapes]
    flat = uniform_words(seed=seed, num_range=num_range, count=sum(sizes))
    out, start = [], 0
    for shape, size in zip(shapes, sizes):
        out.append(flat[start:start + size].reshape(shape))
        start += size
    return out


def install(*, target: ModuleType) -> None:
    """Make ``target`` (a Flower module that imported ``pseudo_rand_gen`` by name) call this expansion.

    Idempotent. Raises if ``target`` has no such attribute: Flower's layout changed, and silently leaving
    its 32-bit expansion in place would be the one failure that shows in no test of the sums.
    """
    if not hasattr(target, ATTRIBUTE):
        raise MaskExpansionError(f"{target.__name__} has no {ATTRIBUTE}: Flower's SecAgg+ layout changed; update "
                                 f"fer_models/privacy/secagg_prg.py's installers (client/secagg.py, server/secagg.py)")
    setattr(target, ATTRIBUTE, pseudo_rand_gen)
