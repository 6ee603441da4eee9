"""How far the encoding alone goes: the score that the kernel mean embedding determines in closed form (issue 14).

For the VP process ``X_t = m X_0 + s Z`` of a law ``nu`` on R^2, ``p_t(x) = m^-2 (nu * N(0, (s/m)^2 I))(x / m)``.
The kernel mean embedding is ``u = nu * N(0, h^2 I)``. For ``s/m >= h``, ``nu * N(0, (s/m)^2)`` is therefore
``u * N(0, (s/m)^2 - h^2)``, a Gaussian multiplier on ``u``'s Fourier series, evaluated at any point in
closed form. For ``s/m < h`` the multiplier is 1 (over-smoothed by ``h``). This script measures that
"base score", with no network, on the 8 unseen mixtures of ``sno_gmm.py`` against the exact score, for
several encoding grids and bandwidths. A learned residual could then be put on top of it, as the
double-digit model does.

Run: ``python resolution_studies/sno_gmm_base_score.py`` (about 2 min); writes
``results/sno_gmm_base/table.md`` (``summary.md`` is that table with its reading).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

import fsdiff as fd
from fsdiff.io import write_text
from fsdiff.sno import GMMFamily, KernelMeanEmbedding, relative_score_error

OUT = Path(__file__).resolve().parent / "results" / "sno_gmm_base"
TIMES = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0)
SETTINGS = ((32, 0.2), (64, 0.2), (64, 0.1), (128, 0.05))   # (encoding grid N, kernel bandwidth h)


def base_score(u: torch.Tensor, kme: KernelMeanEmbedding, sde: fd.VPSDE):
    """``score(x (n, 2), t (n,)) -> (n, 2)``: the closed-form score of ``u (1, 1, N, N)``'s law, as above."""
    origin, L = kme.origin, kme.grid.length[0]
    N = kme.grid.shape[0]
    uh = torch.fft.fft2(u[0, 0].double()) / N**2                 # Fourier coefficients of the periodic u
    w = 2 * math.pi * torch.fft.fftfreq(N, 1.0 / N).double() / L
    W1, W2 = torch.meshgrid(w, w, indexing="ij")
    o = torch.tensor(origin, dtype=torch.float64)
    h2 = kme.bandwidth**2

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        m, s = sde.mean_scale(t.double()).double(), sde.std(t.double()).double()
        extra = ((s / m) ** 2 - h2).clamp(min=0)                  # the blur still to add to u, (n,)
        y = x.double() / m[:, None] - o
        c = (uh[None] * torch.exp(-0.5 * (W1**2 + W2**2)[None] * extra[:, None, None])
             * torch.exp(1j * (W1[None] * y[:, 0, None, None] + W2[None] * y[:, 1, None, None])))
        p = c.sum((1, 2)).real.clamp(min=1e-6)
        grad = torch.stack([(1j * W1[None] * c).sum((1, 2)).real, (1j * W2[None] * c).sum((1, 2)).real], -1)
        return (grad / p[:, None] / m[:, None]).to(x.dtype)

    return score


def main() -> int:
    torch.set_num_threads(1)
    family = GMMFamily(lattice=(3, 3), spacing=1.0, n_components=3, component_std=0.15, test_fraction=0.2, seed=0)
    _, test_c = family.split()
    sde = fd.VPSDE(None, beta_min=0.1, beta_max=20.0)
    origin, L = family.box()
    times = torch.tensor(TIMES)
    rows = []
    for N, h in SETTINGS:
        kme = KernelMeanEmbedding(fd.Grid((N, N), L), origin, bandwidth=h)
        errs = []
        for combo in test_c[:8]:
            mix = family.mixture(combo)
            errs.append(relative_score_error(base_score(kme.exact_gmm(mix, torch.float64), kme, sde), mix, sde, times,
                                             1024, torch.Generator().manual_seed(9)))
        e = torch.stack(errs).mean(0)
        rows.append(f"| {N}² | {h} | " + " | ".join(f"{v:.3f}" for v in e.tolist()) + " |")
        print(rows[-1], flush=True)
    head = ["# The base score from the kernel mean embedding alone (no network), unseen mixtures", "",
            "Relative L² error against the exact score, mean over the 8 unseen mixtures of `sno_gmm.py` (1024 points "
            f"per t, box origin {origin}, side {L}).", "",
            "| grid | h | " + " | ".join(f"t = {t:g}" for t in TIMES) + " |", "|---|---|" + "---|" * len(TIMES)]
    OUT.mkdir(parents=True, exist_ok=True)
    write_text(OUT / "table.md", "\n".join(head + rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
