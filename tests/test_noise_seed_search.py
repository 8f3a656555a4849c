"""The honest-but-curious server searches the seed space of a client's DP noise, then subtracts the noise.

It knows the public settings (noise multiplier, clip, batch size, learning rate) and the code. If the
noise came from a generator whose effective state is small enough to scan, it would try every state,
keep the one whose noise explains the released vector, and subtract it: the clipped sum comes back
noise-free (epsilon infinite). torch's CPU generator keeps 32 bits of any seed, so fedfer's earlier
64-bit secret seed was such a state. The control below runs the search against that generator (the
attacker is granted the high 16 of the 32 bits, to fit the test's budget, and scans 2^16 values) and
recovers the clipped sum; the same search and budget against fedfer's AES-256-CTR source finds nothing.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn

import fer_models.privacy.dp_sgd as privacy
import fer_models.privacy.secure_random as secure_random
from fer_models.privacy.dp_sgd import PrivacyLedger, make_private
from fer_models.privacy.secure_random import KEY_BYTES, SecureRandom

DIM, SIGMA, CLIP = 256, 1.0, 1.0
SCAN = 2**16


def _clipped_sum() -> torch.Tensor:
    """What the noise hides: a sum of clipped per-sample gradients (norm <= CLIP)."""
    g = torch.randn(DIM, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    return g / g.norm() * CLIP


def _torch_noise(seed: int) -> torch.Tensor:
    """Opacus' noise draw from a torch CPU generator (fedfer's earlier generator: a secret 64-bit seed)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.normal(0.0, SIGMA * CLIP, size=(DIM,), generator=gen).double()


def _product_noise(key: bytes) -> torch.Tensor:
    return SecureRandom(key=key).normal((DIM,), std=SIGMA * CLIP, dtype=torch.float64)


def _search(released: torch.Tensor, candidates, noise_of) -> tuple[float, torch.Tensor]:
    """The server's scan: the candidate whose noise leaves the smallest residual, and that residual."""
    best, best_residual = math.inf, None
    for c in candidates:
        residual = released - noise_of(c)
        norm = float(residual.norm())
        if norm < best:
            best, best_residual = norm, residual
    return best, best_residual


def test_torch_keeps_only_32_bits_of_a_seed():
    """Why the old generator fell: two seeds equal modulo 2^32 draw the same noise."""
    s = int.from_bytes(os.urandom(8), "little") | (1 << 40)
    assert torch.equal(_torch_noise(s), _torch_noise(s % 2**32))


def test_the_seed_search_recovers_the_clipped_sum_from_a_32_bit_generator():
    """Control: the attack works against a generator whose effective state is 32 bits."""
    truth = _clipped_sum()
    seed64 = int.from_bytes(os.urandom(8), "little")
    released = truth + _torch_noise(seed64)
    granted = (seed64 % 2**32) & ~(SCAN - 1)  # the attacker knows the high 16 of the 32 effective bits
    best, residual = _search(released, (granted | low for low in range(SCAN)), _torch_noise)
    assert best < 1.5 * CLIP  # the noise-free clipped sum: ~ CLIP, where a wrong guess leaves ~ sigma * sqrt(2 * DIM)
    assert float((residual - truth).abs().max()) < 1e-6


def test_the_same_search_finds_nothing_against_the_products_source():
    """The same scan and budget against fedfer's source: no candidate explains the noise."""
    truth = _clipped_sum()
    key = os.urandom(KEY_BYTES)
    released = truth + _product_noise(key)
    folded = int.from_bytes(key[:4], "little")  # the same 32 bits of the same secret, granted the same way
    granted = folded & ~(SCAN - 1)
    best, residual = _search(released, (granted | low for low in range(SCAN)), _torch_noise)
    floor = SIGMA * CLIP * math.sqrt(2 * DIM)  # the residual of a wrong guess: two independent noises
    assert best > 0.7 * floor, best
    assert float((residual - truth).norm()) > 10 * CLIP
    # the search restricted to the product's own generator (keys built from the granted bits) fails the same way
    best_keyed, _ = _search(released, ((granted | low).to_bytes(KEY_BYTES, "little") for low in range(256)),
                            _product_noise)
    assert best_keyed > 0.7 * floor
    # and with the whole key the subtraction would work: the detection itself is sound
    assert float((released - _product_noise(key) - truth).abs().max()) < 1e-12


def test_flipping_any_bit_of_the_key_changes_the_noise():
    key = os.urandom(KEY_BYTES)
    base = _product_noise(key)
    for bit in range(8 * KEY_BYTES):
        flipped = bytearray(key)
        flipped[bit // 8] ^= 1 << (bit % 8)
        other = _product_noise(bytes(flipped))
        assert not torch.equal(other, base)
        assert float(torch.corrcoef(torch.stack([base, other]))[0, 1]) < 0.5


def test_the_noise_is_gaussian_with_the_asked_std():
    draws = SecureRandom().normal((200_000,), std=2.5, dtype=torch.float64)
    assert abs(float(draws.mean())) < 0.03
    assert abs(float(draws.std()) - 2.5) < 0.03
    kurtosis = float(((draws / draws.std()) ** 4).mean())
    assert abs(kurtosis - 3.0) < 0.1
    uniform = SecureRandom().uniform(100_000)
    assert 0.0 < float(uniform.min()) and float(uniform.max()) < 1.0
    assert SecureRandom().bernoulli(100_000, p=0.25).float().mean().sub(0.25).abs() < 0.01


def _one_noise_only_step(monkeypatch, keys: list[bytes]) -> tuple[nn.Module, float]:
    """One DP step with an empty Poisson batch (zero clipped sum): the gradient is the noise alone."""
    draws = iter(keys)
    monkeypatch.setattr(secure_random.os, "urandom", lambda n: next(draws))
    model = nn.Linear(5, 3)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(40)), batch_size=8)
    parts = make_private(model=model, optimizer=opt, loader=loader, noise_multiplier=SIGMA, max_grad_norm=CLIP,
                         ledger=PrivacyLedger(), grad_sample_mode="hooks")
    from fer_models.privacy.sgd_helpers import empty_grad_samples

    parts.optimizer.zero_grad(set_to_none=True)
    empty_grad_samples(parts.model)
    parts.optimizer.step()
    return parts, parts.optimizer.expected_batch_size


def test_make_private_draws_its_noise_and_its_batches_from_fresh_256_bit_keys(monkeypatch):
    """Independent recomputation: the optimizer's noise equals the noise keyed by the second os.urandom(32)."""
    sampler_key, noise_key = b"\x11" * KEY_BYTES, b"\x22" * KEY_BYTES
    parts, expected_batch = _one_noise_only_step(monkeypatch, [sampler_key, noise_key])
    expected = SecureRandom(key=noise_key)
    for p in parts.model.parameters():  # params in order; SGD lr 1 from the initial weights
        noise = expected.normal(p.shape, std=SIGMA * CLIP, dtype=p.dtype)
        assert torch.allclose(p.grad, noise / expected_batch, atol=1e-7), p.shape
    batches = list(parts.loader)
    reference = privacy.SecurePoissonSampler(num_samples=40, sample_rate=parts.sample_rate,
                                             source=SecureRandom(key=sampler_key))
    assert [b[0].tolist() for b in batches] == list(reference)
    assert isinstance(parts.loader.batch_sampler, privacy.SecurePoissonSampler)


def test_an_optimizer_whose_noise_step_is_unchecked_is_refused():
    from opacus.optimizers import AdaClipDPOptimizer

    opt = AdaClipDPOptimizer(torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), noise_multiplier=1.0,
                             max_grad_norm=1.0, expected_batch_size=4, target_unclipped_quantile=0.5,
                             clipbound_learning_rate=0.2, max_clipbound=2.0, min_clipbound=0.1,
                             unclipped_num_std=1.0)
    with pytest.raises(TypeError, match="cryptographic source"):
        privacy.use_secure_noise(opt, source=SecureRandom())


@pytest.mark.parametrize("device", ["cpu", *(["cuda"] if torch.cuda.is_available() else [])])
def test_the_noise_lands_on_the_parameters_device(device):
    noise = SecureRandom().normal((3, 4), std=1.0, device=device, dtype=torch.float32)
    assert noise.device.type == device and noise.dtype == torch.float32 and noise.shape == (3, 4)
