"""How far the encoding alone goes: the score that the kernel mean embedding determines in closed form (issue 14).

For the VP process ``X_t = m X_0 + s Z`` of a law ``nu`` on R^2, ``p_t(x) = m^-2 (nu * N(0, (s/m)^2 I))(x / m)``.
The kernel mean embedding is ``u = nu * N(0, h^2 I)``. For ``s/m >= h``, ``nu * N(0, (s/m)^2)`` is therefore
``u * N(0, (s/m)^2 - h^2)``, a Gaussian multiplier on ``u``'s Fourier series, evaluated at any point in
closed form. For ``s/m < h`` the multiplier is 1 (over-smoothed by ``h``). This script measures that
"base score", with no network, on the 8 unseen mixtures of ``sno_gmm.py`` against the exact score, for
several encoding grids and bandwidths. A learned residual could then be put on top of it, as the
double-digit model does.

Run: ``python resolution_studies/sno_gmm_base_score.py`` (about 2 min); writes
``results/sno_gmm_base/summary.md``.
"""
from pathlib import Path
import math, torch, fsdiff as fd
from fsdiff.sno import GMMFamily, KernelMeanEmbedding, relative_score_error
torch.set_num_threads(1)
family = GMMFamily(lattice=(3, 3), spacing=1.0, n_components=3, component_std=0.15, test_fraction=0.2, seed=0)
train_c, test_c = family.split()
sde = fd.VPSDE(None, beta_min=0.1, beta_max=20.0)
origin, L = family.box()

def base_score(u, kme, sde):
    g = kme.grid
    uh = torch.fft.fft2(u[0, 0].double())                    # (N, N)
    N = g.shape[0]
    k = torch.fft.fftfreq(N, 1.0 / N).double()
    w = 2 * math.pi * k / L
    W1, W2 = torch.meshgrid(w, w, indexing="ij")
    o = torch.tensor(origin, dtype=torch.float64)
    h2 = kme.bandwidth ** 2
    def score(x, t):
        m = sde.mean_scale(t.double()).double(); s = sde.std(t.double()).double()
        sig2 = ((s / m) ** 2 - h2).clamp(min=0)               # (n,)
        y = x.double() / m[:, None] - o                       # (n, 2)
        damp = torch.exp(-0.5 * (W1**2 + W2**2)[None] * sig2[:, None, None])   # (n, N, N)
        ph = torch.exp(1j * (W1[None] * y[:, 0, None, None] + W2[None] * y[:, 1, None, None]))
        c = uh[None] * damp * ph / N**2
        p = c.sum((1, 2)).real
        gx = (1j * W1[None] * c).sum((1, 2)).real; gy = (1j * W2[None] * c).sum((1, 2)).real
        p = p.clamp(min=1e-6)
        sc = torch.stack([gx, gy], -1) / p[:, None] / m[:, None]
        return sc.to(x.dtype)
    return score

times = torch.tensor([0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0])
rows = []
for N, h in ((32, 0.2), (64, 0.2), (64, 0.1), (128, 0.05)):
    kme = KernelMeanEmbedding(fd.Grid((N, N), L), origin, bandwidth=h)
    errs = []
    for combo in test_c[:8]:
        mix = family.mixture(combo)
        errs.append(relative_score_error(base_score(kme.exact_gmm(mix, torch.float64), kme, sde), mix, sde, times, 1024,
                                         torch.Generator().manual_seed(9)))
    e = torch.stack(errs).mean(0)
    rows.append(f"| {N}² | {h} | " + " | ".join(f"{v:.3f}" for v in e.tolist()) + " |")
    print(rows[-1], flush=True)
out = Path(__file__).resolve().parent / "results" / "sno_gmm_base"
out.mkdir(parents=True, exist_ok=True)
head = ["# The base score from the kernel mean embedding alone (no network), unseen mixtures", "",
        "Relative L² error against the exact score, mean over the 8 unseen mixtures of `sno_gmm.py` (1024 points per t, "
        f"box origin {origin}, side {L}).", "",
        "| grid | h | " + " | ".join(f"t = {t:g}" for t in times.tolist()) + " |",
        "|---|---|" + "---|" * len(times)]
(out / "summary.md").write_text("\n".join(head + rows) + "\n")
