"""The SecAgg+ dropout attack on mask expansion: Flower's 32-bit folded seed falls to a search, fedfer's does not.

Three clients mask as Flower's client mod does (quantize the weighted update, prepend its weight
factor, add the self mask, add or subtract each pairwise mask by node order, mod 2^32). Client 3
drops out after the masked vectors went out: the server rebuilds client 3's key (its pairwise masks
with 1 and 2) and the survivors' self-mask seeds from the key shares, so in client 1's masked vector
only the pairwise mask shared with client 2 is unknown. With Flower's expansion that mask is one of
2^32, fixed by the XOR of the key's 4-byte words; the right candidate is the one whose residual lies
in the quantization range. The search here is granted the high 16 bits of the folded seed and scans
the 2^16 low values (control: it recovers client 1's update). With fedfer's expansion the same 2^16
candidates, built from the same folded 32 bits of the same key, leave no residual in range.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_combine,
    factor_extract,
    parameters_mod,
    parameters_subtraction,
)
from flwr.common.secure_aggregation.quantization import dequantize, quantize
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen as flower_prg
from flwr.supercore.primitives.asymmetric import generate_key_pairs

from fer_models.config.secagg_checks import MODULUS_RANGE
from fer_models.privacy import secagg_prg

M, Q, CLIP = MODULUS_RANGE, 2**22, 8.0  # fedfer's modulus, default quantization and clipping ranges
SHAPES = [(48,), (4, 4)]
WEIGHT, MAX_WEIGHT = 300, 1000


def _fold(key: bytes) -> int:
    """Flower's seed: the XOR of the key's little-endian 4-byte words."""
    return int(np.bitwise_xor.reduce(np.frombuffer(key, dtype="<u4")))


def _candidate_key(seed32: int) -> bytes:
    """A 32-byte key whose 4-byte words XOR to ``seed32``."""
    return seed32.to_bytes(4, "little") + bytes(28)


def _keys() -> tuple[dict[tuple[int, int], bytes], dict[int, bytes]]:
    """Pairwise keys by ECDH + HKDF (Flower's ``generate_shared_key``; both ends get the same), self-mask seeds."""
    pairs = {nid: generate_key_pairs() for nid in (1, 2, 3)}
    shared = {}
    for i in (1, 2, 3):
        for j in (1, 2, 3):
            if i != j:
                shared[i, j] = generate_shared_key(pairs[i][0], pairs[j][1])
    assert shared[1, 2] == shared[2, 1] and len(shared[1, 2]) == 44  # urlsafe base64 of 32 bytes
    return shared, {nid: os.urandom(32) for nid in (1, 2, 3)}


def _quantized(update: list[np.ndarray]) -> list[np.ndarray]:
    """Client 1's vector before masks, as Flower's mod forms it: weight factor, then the quantized update."""
    q_ratio = round(WEIGHT / MAX_WEIGHT * Q)
    return factor_combine(q_ratio, quantize([u * (q_ratio / Q) for u in update], CLIP, Q))


def _masked(prg, vector: list[np.ndarray], *, nid: int, seed: bytes, shared: dict) -> list[np.ndarray]:
    """Flower's ``_mask`` arithmetic with ``prg``: + self mask, + pairwise if nid > other else -, mod M."""
    dims = [a.shape for a in vector]
    out = [a.astype(np.int64) + m for a, m in zip(vector, prg(seed, M, dims))]
    for other in (1, 2, 3):
        if other != nid:
            sign = 1 if nid > other else -1
            out = [a + sign * m for a, m in zip(out, prg(shared[nid, other], M, dims))]
    return parameters_mod(out, M)


def _residual_known(prg, masked: list[np.ndarray], *, seed: bytes, shared: dict) -> list[np.ndarray]:
    """Client 1's masked vector minus what the server knows after client 3 dropped: its self mask (seed rebuilt
    from shares) and its pairwise mask with client 3 (client 3's key rebuilt); 1 < 3, so that one was subtracted."""
    dims = [a.shape for a in masked]
    out = parameters_subtraction(masked, prg(seed, M, dims))
    return [a + m for a, m in zip(out, prg(shared[1, 3], M, dims))]


def _in_range(residual: list[np.ndarray]) -> bool:
    return all(int(a.max()) <= Q for a in parameters_mod(residual, M))


def _decoded(residual: list[np.ndarray]) -> np.ndarray:
    """What the server reads from an in-range residual: one client's update (the workflow's dequantization, k=1)."""
    q_ratio, values = factor_extract(parameters_mod(residual, M))
    return np.concatenate([v.ravel() for v in dequantize(values, CLIP, Q)]) * (Q / int(q_ratio))


def _flat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.int64).ravel() for a in arrays])


def _search(candidate_masks, base: list[np.ndarray], *, high: int) -> list[int]:
    """The server's scan: every low 16 bits under the granted high 16; the candidates whose residual is in range.
    Client 1 < client 2, so client 1 subtracted the unknown mask: add the candidate back. ``candidate_masks(seed32,
    n)`` is the expansion's first ``n`` values (a flat draw: both expansions draw the arrays in order)."""
    flat = _flat(base)
    found = []
    for low in range(2**16):
        seed32 = (high << 16) | low
        if int(((flat + candidate_masks(seed32, flat.size)) & (M - 1)).max()) <= Q:
            found.append(seed32)
    return found


def _flower_candidates():
    """Flower's expansion of a 32-bit seed, reseeding one RandomState (the same draws as ``pseudo_rand_gen``,
    ~10x faster than building a RandomState per candidate)."""
    gen = np.random.RandomState(0)

    def masks(seed32: int, n: int) -> np.ndarray:
        gen.seed(seed32)
        return gen.randint(0, M - 1, n, dtype=np.int64)

    return masks


@pytest.fixture()
def scene():
    rng = np.random.default_rng(7)
    update = [rng.normal(0, 0.05, s) for s in SHAPES]
    truth = np.concatenate([u.ravel() for u in update])
    return update, truth, *_keys()


def test_control_flowers_32_bit_masks_fall_to_a_search_and_reveal_a_survivors_update(scene):
    update, truth, shared, seeds = scene
    masked = _masked(flower_prg, _quantized(update), nid=1, seed=seeds[1], shared=shared)
    base = _residual_known(flower_prg, masked, seed=seeds[1], shared=shared)
    seed32 = _fold(shared[1, 2])
    fast, dims = _flower_candidates(), [a.shape for a in masked]
    true_mask = flower_prg(shared[1, 2], M, dims)
    assert np.array_equal(fast(seed32, _flat(true_mask).size), _flat(true_mask))  # the scan draws what Flower's mod drew
    assert np.array_equal(_flat(flower_prg(_candidate_key(seed32), M, dims)), _flat(true_mask))  # only the fold counts
    found = _search(fast, base, high=seed32 >> 16)
    assert found == [seed32]
    recovered = _decoded([a + m for a, m in zip(base, flower_prg(_candidate_key(found[0]), M, dims))])
    assert np.corrcoef(recovered, truth)[0, 1] > 0.99
    assert np.abs(recovered - truth).max() < 1e-4  # the update itself, to the quantization step


def test_fedfers_masks_from_the_whole_key_leave_the_same_search_nothing(scene):
    update, truth, shared, seeds = scene
    prg = secagg_prg.pseudo_rand_gen
    masked = _masked(prg, _quantized(update), nid=1, seed=seeds[1], shared=shared)
    base = _residual_known(prg, masked, seed=seeds[1], shared=shared)
    seed32 = _fold(shared[1, 2])
    found = _search(lambda s, n: prg(_candidate_key(s), M, [(n,)])[0], base, high=seed32 >> 16)
    assert found == []
    assert not _in_range(base)  # nor does leaving the unknown mask in
    # what the control's winning guess (the key's own fold) decodes to here: uniform noise mod 2^32, not the
    # update (about 1 in 2^10 entries lands in the quantization range by chance; values far beyond the clipping)
    guess = parameters_mod([a + m for a, m in zip(base, prg(_candidate_key(seed32), M, [a.shape for a in base]))], M)
    assert (_flat(guess) <= Q).sum() < 5 and np.abs(_decoded(guess) - truth).max() > 1.0
    # the arithmetic is right: only the whole key (which the server does not have) removes the mask
    exact = [a + m for a, m in zip(base, prg(shared[1, 2], M, [a.shape for a in base]))]
    assert _in_range(exact) and np.corrcoef(_decoded(exact), truth)[0, 1] > 0.99


def test_flipping_any_one_of_the_keys_256_bits_changes_the_mask():
    key = os.urandom(32)
    dims = [(8,)]
    mask = secagg_prg.pseudo_rand_gen(key, M, dims)[0]
    flower_same = 0
    for bit in range(256):
        flipped = bytearray(key)
        flipped[bit // 8] ^= 1 << (bit % 8)
        other = secagg_prg.pseudo_rand_gen(bytes(flipped), M, dims)[0]
        assert (other != mask).mean() > 0.5, bit
        # the same bit flipped in the next 4-byte word too: the XOR fold, hence Flower's mask, is unchanged
        twice = bytearray(flipped)
        twice[(bit // 8 + 4) % 32] ^= 1 << (bit % 8)
        assert (secagg_prg.pseudo_rand_gen(bytes(twice), M, dims)[0] != mask).mean() > 0.5, bit
        flower_same += np.array_equal(flower_prg(bytes(twice), M, dims)[0], flower_prg(key, M, dims)[0])
    assert flower_same == 256  # control: Flower's masks ignore every such pair of flips


def test_both_ends_of_a_pair_and_the_server_derive_the_same_mask_in_the_installed_modules():
    import importlib

    import client.secagg  # noqa: F401  (installs on the client mod)
    import server.secagg  # noqa: F401  (installs on the server workflow)

    mod = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
    workflow = importlib.import_module("flwr.server.workflow.secure_aggregation.secaggplus_workflow")
    assert mod.pseudo_rand_gen is secagg_prg.pseudo_rand_gen is workflow.pseudo_rand_gen
    secagg_prg.install(target=mod)  # idempotent
    assert mod.pseudo_rand_gen is secagg_prg.pseudo_rand_gen
    shared, seeds = _keys()
    dims = [(1,), (5, 3), ()]
    one, two, rebuilt = (mod.pseudo_rand_gen(shared[1, 2], M, dims), mod.pseudo_rand_gen(shared[2, 1], M, dims),
                         workflow.pseudo_rand_gen(shared[1, 2], M, dims))
    assert all(np.array_equal(a, b) and np.array_equal(a, c) for a, b, c in zip(one, two, rebuilt))
    assert one[2].shape == () and all(a.dtype == np.int64 for a in one)


def test_masks_are_uniform_on_the_range_and_a_non_power_of_two_range_is_served():
    draws = secagg_prg.pseudo_rand_gen(b"\x01" * 32, M, [(200_000,)])[0]
    assert draws.min() >= 0 and draws.max() < M and abs(draws.mean() / M - 0.5) < 0.005
    hist = np.bincount(draws >> 28, minlength=16)  # 16 equal bins: chi-square with 15 d.o.f.
    assert ((hist - 12_500) ** 2 / 12_500).sum() < 50
    odd = secagg_prg.pseudo_rand_gen(b"\x02" * 44, 1000, [(30_000,)])[0]
    assert odd.min() == 0 and odd.max() == 999 and abs(np.bincount(odd % 10).std() / 3000) < 0.05
    with pytest.raises(secagg_prg.MaskExpansionError, match="num_range"):
        secagg_prg.pseudo_rand_gen(b"\x01" * 32, 2**64, [(3,)])
    with pytest.raises(secagg_prg.MaskExpansionError, match="non-empty bytes"):
        secagg_prg.pseudo_rand_gen(b"", M, [(3,)])
