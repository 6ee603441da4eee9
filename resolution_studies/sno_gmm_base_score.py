"""How far the encoding alone goes: the score that the kernel mean embedding determines in closed form (issue 14).

For the VP process ``X_t = m X_0 + s Z`` of a law ``nu`` on R^2, ``p_t(x) = m^-2 (nu * N(0, (s/m)^2 I))(x / m)``.
The kernel mean embedding is ``u = nu * N(0, h^2 I)``. For ``s/m >= h``, ``nu * N(0, (s/m)^2)`` is therefore
``u * N(0, (s/m)^2 - h^2)``, a Gaussian multiplier on ``u``'s Fourier series, evaluated at any point in
closed form. For ``s/m < h`` the multiplier is 1 (over-smoothed by ``h``). This script measures that
"base score", with no network, on the 8 unseen mixtures of ``sno_gmm.py`` against the exact score, for
several encoding grids, bandwidths and zero-paddings (``pad``). The hybrid SNO of ``sno_gmm.py`` puts a
learned gate and residual on top of it.

Run: ``python resolution_studies/sno_gmm_base_score.py`` (about 2 min); writes
``results/sno_gmm_base/summary.md`` (the table, then the hand-written ``reading.md``).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

import fsdiff as fd
from fsdiff.sno import GMMFamily, KernelMeanEmbedding, KMEBaseScore, relative_score_error

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_summary  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "sno_gmm_base"
TIMES = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0)
SETTINGS = ((32, 0.2, 1), (64, 0.2, 1), (64, 0.1, 1), (128, 0.05, 1), (32, 0.1, 4))   # (grid N, bandwidth h, pad)


def base_score(u: torch.Tensor, kme: KernelMeanEmbedding, sde: fd.VPSDE, pad: int):
    """``score(x (n, 2), t (n,)) -> (n, 2)``: :class:`fsdiff.sno.KMEBaseScore` of ``u (1, 1, N, N)``, never faded."""
    base = KMEBaseScore(u, kme, pad=pad, clip=1e9)

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eta = base.eta(x[None], t[None], sde, (2 * sde.T, 3 * sde.T))[0]
        return -eta / sde.std(t.double()).to(x.dtype)[:, None]

    return score


def main() -> int:
    torch.set_num_threads(1)
    family = GMMFamily(lattice=(3, 3), spacing=1.0, n_components=3, component_std=0.15, test_fraction=0.2, seed=0)
    _, test_c = family.split()
    sde = fd.VPSDE(None, beta_min=0.1, beta_max=20.0)
    origin, L = family.box()
    times = torch.tensor(TIMES)
    rows = []
    for N, h, pad in SETTINGS:
        kme = KernelMeanEmbedding(fd.Grid((N, N), L), origin, bandwidth=h)
        errs = []
        for combo in test_c[:8]:
            mix = family.mixture(combo)
            errs.append(relative_score_error(base_score(kme.exact_gmm(mix, torch.float64), kme, sde, pad), mix, sde, times,
                                             1024, torch.Generator().manual_seed(9)))
        e = torch.stack(errs).mean(0)
        rows.append(f"| {N}² | {h} | {pad} | " + " | ".join(f"{v:.3f}" for v in e.tolist()) + " |")
        print(rows[-1], flush=True)
    head = ["# The base score from the kernel mean embedding alone (no network), unseen mixtures", "",
            "Relative L² error against the exact score, mean over the 8 unseen mixtures of `sno_gmm.py` (1024 points "
            f"per t, box origin {origin}, side {L}).", "",
            "| grid | h | pad | " + " | ".join(f"t = {t:g}" for t in TIMES) + " |", "|---|---|---|" + "---|" * len(TIMES)]
    OUT.mkdir(parents=True, exist_ok=True)
    write_summary(OUT, "\n".join(head + rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
