"""The ScatterNet front-end as an exportable real-valued graph (ONNX, TorchScript).

kymatio's ``Scattering2D`` runs on complex tensors (``torch.fft``, ``view_as_complex``), which
the ONNX exporters do not carry. :class:`ScatterGraph` computes the same transform, step by step
as kymatio 0.3 does it (reflect padding, Fourier-domain filtering by the same Morlet and
low-pass filters, subsampling by periodisation in the Fourier domain, modulus, unpadding), but
with the 2-D discrete Fourier transforms written as products with constant DFT matrices on
separate real and imaginary parts. Filtering in the Fourier domain is the circular convolution
of the padded image with the fixed filters, so this *is* the convolution by the scattering
filters, just evaluated through the transform. Only MatMul, Mul, Reshape, ReduceMean, Sqrt,
Pad and GroupNorm remain; the parity test compares it with kymatio (tests/test_export.py).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

Complex = tuple[Tensor, Tensor]


def _dft(n: int) -> tuple[Tensor, Tensor]:
    """Real and imaginary parts of the ``n`` x ``n`` DFT matrix ``exp(-2 pi i k l / n)``."""
    k = np.arange(n)
    angle = -2.0 * np.pi * ((k[:, None] * k[None, :]) % n) / n
    return torch.from_numpy(np.cos(angle)).float(), torch.from_numpy(np.sin(angle)).float()


def _subsample(x: Tensor, k: int) -> Tensor:
    """kymatio's ``subsample_fourier``: periodise the last two (Fourier) axes by ``k``."""
    if k == 1:
        return x
    *lead, m, n = x.shape
    return x.reshape(-1, k, m // k, k, n // k).mean(dim=(1, 3)).reshape(*lead, m // k, n // k)


class ScatterGraph(nn.Module):
    """Drop-in replacement of :class:`~fer_models.models.scatter.ScatterFrontend` for export."""

    def __init__(self, *, phi: dict, psi: list[dict], J: int, L: int, pads: tuple[int, int, int, int],
                 out_channels: int, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.J, self.L, self.pads, self.out_channels = J, L, pads, out_channels
        self.norm = norm
        m = phi["levels"][0].shape[0]
        self.sizes = [m // 2 ** r for r in range(J + 1)]
        for r, size in enumerate(self.sizes):
            fr, fi = _dft(size)
            self.register_buffer(f"fr{r}", fr, persistent=False)
            self.register_buffer(f"fi{r}", fi, persistent=False)
        for r in range(J):
            self.register_buffer(f"phi{r}", torch.from_numpy(np.asarray(phi["levels"][r])).float(), persistent=False)
        # psi{j}_{r}: the L wavelets of scale j at resolution r (those kymatio builds), (L, m_r, m_r)
        for j in range(J):
            group = [p for p in psi if p["j"] == j]
            for r in range(len(group[0]["levels"])):
                bank = np.stack([np.asarray(p["levels"][r]) for p in group])
                self.register_buffer(f"psi{j}_{r}", torch.from_numpy(bank).float(), persistent=False)

    @classmethod
    def from_frontend(cls, frontend: nn.Module) -> "ScatterGraph":
        s = frontend.scattering
        m, n = s._M_padded, s._N_padded
        h, w = s.shape
        if m != n or h != w:
            raise ValueError(f"ScatterGraph needs square inputs (got {h}x{w}, padded {m}x{n})")
        pads = ((m - h) // 2, (m - h + 1) // 2, (n - w) // 2, (n - w + 1) // 2)
        if max(pads) >= h:
            raise ValueError(f"padding {pads} reaches the image size {h}; use a larger image or a smaller J")
        return cls(phi=s.phi, psi=s.psi, J=s.J, L=s.L, pads=pads, out_channels=frontend.out_channels,
                   norm=frontend.norm)

    def _buf(self, name: str) -> Tensor:
        return getattr(self, name)

    def _fft(self, x: Tensor, r: int, *, inverse: bool = False, imag: Tensor | None = None) -> Complex:
        """2-D DFT (or inverse DFT) on the last two axes of a real (``imag=None``) or complex input."""
        fr, fi = self._buf(f"fr{r}"), self._buf(f"fi{r}")
        if inverse:
            size = fr.shape[0]
            fr, fi = fr / size, -fi / size
        if imag is None:
            ar, ai = fr @ x, fi @ x
        else:
            ar, ai = fr @ x - fi @ imag, fr @ imag + fi @ x
        return ar @ fr - ai @ fi, ar @ fi + ai @ fr

    def _pass(self, c: Complex, filt: Tensor, k: int, r_out: int) -> Tensor:
        """``|ifft(subsample(c * filt, k))|`` at resolution ``r_out``, real."""
        re, im = _subsample(c[0] * filt, k), _subsample(c[1] * filt, k)
        re, im = self._fft(re, r_out, inverse=True, imag=im)
        return torch.sqrt(re * re + im * im)

    def _lowpass(self, c: Complex, r: int) -> Tensor:
        """``unpad(real(ifft(subsample(c * phi_r, 2**(J-r)))))``: the output maps of one path."""
        phi = self._buf(f"phi{r}")
        k = 2 ** (self.J - r)
        re, im = _subsample(c[0] * phi, k), _subsample(c[1] * phi, k)
        re, _ = self._fft(re, self.J, inverse=True, imag=im)
        return re[..., 1:-1, 1:-1]

    def scattering(self, x: Tensor) -> Tensor:
        """``(N, H, W)`` images → ``(N, K, H/2**J, W/2**J)`` scattering maps (kymatio's order)."""
        top, bottom, left, right = self.pads
        x = F.pad(x[:, None], (left, right, top, bottom), mode="reflect")[:, 0]
        x0 = self._fft(x, 0)
        out = [self._lowpass(x0, 0)[:, None]]
        first, second = [], []
        for j1 in range(self.J):
            psi = self._buf(f"psi{j1}_0")  # (L, m, m)
            u1 = self._pass((x0[0][:, None], x0[1][:, None]), psi, 2 ** j1, j1)  # (N, L, m1, m1)
            u1c = self._fft(u1, j1)
            first.append(self._lowpass(u1c, j1))
            blocks = []
            for j2 in range(j1 + 1, self.J):
                psi2 = self._buf(f"psi{j2}_{j1}")  # (L, m1, m1)
                u2 = self._pass((u1c[0][:, :, None], u1c[1][:, :, None]), psi2, 2 ** (j2 - j1), j2)
                blocks.append(self._lowpass(self._fft(u2, j2), j2))  # (N, L1, L2, h, w)
            if blocks:
                s2 = torch.cat(blocks, dim=2)
                second.append(s2.reshape(s2.shape[0], -1, *s2.shape[-2:]))
        return torch.cat(out + first + second, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        maps = self.scattering(x.reshape(-1, h, w))  # (B*C*T, K, h', w')
        k, hh, ww = maps.shape[1], maps.shape[2], maps.shape[3]
        maps = maps.reshape(b, c, t, k, hh, ww).permute(0, 1, 3, 2, 4, 5).reshape(b, c * k, t, hh, ww)
        return self.norm(maps)


__all__ = ["ScatterGraph"]
