"""The score that a kernel mean embedding determines in closed form: the base of a hybrid SNO.

For the process ``X_t = m(t) X_0 + s(t) Z`` of a law ``nu`` on R^2,
``p_t(x) = m^-2 (nu * N(0, (s/m)^2 I))(x / m)``. The Gaussian-kernel mean embedding is
``u = nu * N(0, h^2 I)``, so for ``s/m >= h`` the blurred law is ``u * N(0, e I)`` with
``e = (s/m)^2 - h^2``: a Gaussian Fourier multiplier on ``u``. Evaluated from ``u``'s Fourier series
at any point, this gives ``grad log p_t`` exactly whenever ``u`` is the exact embedding and
``s/m >= h`` (for ``s/m < h`` it gives the score of ``u`` itself, over-smoothed by ``h``).

``u`` is zero-padded ``pad`` times before the series is taken, so the periodic images of the blurred
law stay far away (the series of the unpadded box wraps once ``s/m`` approaches the box margin).
The base is faded out by a cosine between ``t_fade[0]`` and ``t_fade[1]``: at large ``t`` the blurred
law outgrows any box, and the score is nearly Gaussian and easy for the network.

A hybrid SNO (``ScoreNeuralOperator(base=...)``) predicts ``eta = g * eta_base + r`` with a learned
gate ``g`` and residual ``r``, where ``eta_base = -s(t) grad log p_t`` from :class:`KMEBaseScore`.
"""

from __future__ import annotations

import math

import torch

from ..sde import SDE
from .embedding import KernelMeanEmbedding

__all__ = ["KMEBaseScore", "fade_weight"]


def fade_weight(t: torch.Tensor, t_fade: tuple[float, float]) -> torch.Tensor:
    """1 for ``t <= t_fade[0]``, a cosine down to 0 at ``t_fade[1]``, 0 after; shape of ``t``."""
    t0, t1 = t_fade
    r = ((t - t0) / (t1 - t0)).clamp(0.0, 1.0)
    return 0.5 * (1.0 + torch.cos(math.pi * r))


class KMEBaseScore:
    """Closed-form noise prediction ``eta_base = -s grad log p_t`` of the laws encoded by ``u``.

    Parameters
    ----------
    u : ``(B, 1, N1, N2)`` kernel mean embeddings on ``kme.grid`` (exact or empirical).
    kme : the embedding ``u`` was made with (box origin, bandwidth ``h``, 2-D grid).
    pad : zero-padding factor of the box before the Fourier series is taken (>= 1).
    clip : largest norm of ``eta_base`` at a point (the noise ``z`` it predicts is ``N(0, I)``).

    Far in the tails, where the series' density falls below ``1e-9`` of ``u``'s peak and its ratio
    ``grad p / p`` is rounding noise, the base is the score of the Gaussian with ``u``'s mean and
    (deconvolved, isotropic) variance instead: it points back to the mass.
    """

    def __init__(self, u: torch.Tensor, kme: KernelMeanEmbedding, pad: int = 4, clip: float = 6.0):
        if kme.dim != 2:
            raise ValueError(f"the KME base score is implemented for 2-D embeddings; got a {kme.dim}-D grid")
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 1:
            raise ValueError(f"pad must be an integer >= 1; got {pad!r}")
        if not clip > 0:
            raise ValueError(f"clip must be positive; got {clip}")
        kme.grid.check(u, "u", min_leading=2)
        if u.ndim != 4 or u.shape[1] != 1:
            raise ValueError(f"u must be (B, 1, {', '.join(map(str, kme.grid.shape))}); got {tuple(u.shape)}")
        n1, n2 = kme.grid.shape
        big = torch.zeros(u.shape[0], pad * n1, pad * n2, dtype=torch.float64, device=u.device)
        big[:, :n1, :n2] = u[:, 0].to(torch.float64)
        # u(y) = sum_k c_k exp(i w_k . (y - origin)) on the padded periodic box; the zero pad keeps the images away
        self.coef = torch.fft.fft2(big) / (pad * n1 * pad * n2)            # (B, P1, P2) complex128
        self.w = [2 * math.pi * torch.fft.fftfreq(p * n, 1.0 / (p * n), dtype=torch.float64, device=u.device) / (p * L)
                  for p, n, L in ((pad, n1, kme.grid.length[0]), (pad, n2, kme.grid.length[1]))]
        self.origin = torch.tensor(kme.origin, dtype=torch.float64, device=u.device)
        self.h2 = kme.bandwidth ** 2
        self.clip = float(clip)
        self.batch_size = u.shape[0]
        # the series' floor: below this the density is indistinguishable from the rounding of the sum
        self.floor = 1e-9 * float(u.abs().amax()) if u.numel() else 0.0
        # moments of the law u encodes, for the tails: mean (B, 2) and isotropic variance (B,)
        r = kme.points(torch.float64).to(u.device)                          # (M, 2)
        w = u[:, 0].reshape(u.shape[0], -1).to(torch.float64).clamp(min=0)
        w = w / w.sum(-1, keepdim=True).clamp(min=1e-300)
        self.mean = w @ r
        spread = (w * ((r[None] - self.mean[:, None]) ** 2).sum(-1)).sum(-1) / 2
        self.var = (spread - self.h2).clamp(min=self.h2)

    def eta(self, x: torch.Tensor, t: torch.Tensor, sde: SDE, t_fade: tuple[float, float]) -> torch.Tensor:
        """``fade(t) * eta_base`` at ``x (B, P, 2)``, ``t (B, P)`` -> ``(B, P, 2)`` in ``x``'s dtype (0 where faded)."""
        if x.ndim != 3 or x.shape[-1] != 2 or (x.shape[0] != self.batch_size and self.batch_size != 1):
            raise ValueError(f"x must be ({self.batch_size}, P, 2); got {tuple(x.shape)}")
        if tuple(t.shape) != tuple(x.shape[:-1]):
            raise ValueError(f"t must be {tuple(x.shape[:-1])}; got {tuple(t.shape)}")
        t64 = t.to(torch.float64)
        fade = fade_weight(t64, t_fade)
        out = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
        live = fade > 0
        if not live.any():
            return out.to(x.dtype)
        m, s = sde.mean_scale(t64), sde.std(t64)
        extra = ((s / m) ** 2 - self.h2).clamp(min=0.0)                    # blur still to add to u, (B, P)
        y = x.to(torch.float64) / m[..., None] - self.origin               # (B, P, 2)
        w1, w2 = self.w
        # separable series: exp(-e|w|²/2 + i w.y) = a(w1) b(w2)
        a = torch.exp(-0.5 * w1**2 * extra[..., None] + 1j * w1 * y[..., 0, None])   # (B, P, P1)
        b = torch.exp(-0.5 * w2**2 * extra[..., None] + 1j * w2 * y[..., 1, None])   # (B, P, P2)
        A = a @ self.coef                                                   # (B, P, P2); one u broadcasts
        p = (A * b).sum(-1).real
        d2 = (A * (1j * w2 * b)).sum(-1).real
        d1 = (((1j * w1 * a) @ self.coef) * b).sum(-1).real
        ok = p > self.floor
        grad_log = torch.stack([d1, d2], -1) / p.clamp(min=self.floor)[..., None] / m[..., None]   # grad_x log p_t
        var = self.var[:, None] * m**2 + s**2
        tail = -(x.to(torch.float64) - m[..., None] * self.mean[:, None]) / var[..., None]   # the Gaussian of u's moments
        eta = -s[..., None] * torch.where(ok[..., None], grad_log, tail)
        norm = eta.norm(dim=-1, keepdim=True)
        eta = eta * (self.clip / norm.clamp(min=self.clip))                  # cut to |eta| <= clip
        eta = torch.where(live[..., None], eta, torch.zeros_like(eta))
        return (fade[..., None] * eta).to(x.dtype)
