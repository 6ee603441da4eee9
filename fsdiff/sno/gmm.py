"""Families of 2-D Gaussian mixtures with exact scores at every diffusion time.

A :class:`GMMFamily` places one Gaussian component in each cell of a lattice (cell
``(i, j)`` has its own mean, covariance and weight); a mixture is a choice of
``n_components`` cells, so the family is the set of all such combinations. The train/test
split holds out whole combinations: a test mixture never appears in training, although each
of its components does (as part of other mixtures).

:class:`GaussianMixture` holds one mixture or a batch of mixtures (parameters with a leading
batch dimension), draws exact samples, and gives the exact log-density and score of the
forward-SDE marginal ``p_t = law(m(t) X_0 + s(t) Z)``, ``Z ~ N(0, I)``, for any fsdiff
:class:`~fsdiff.sde.SDE` (VP or VE): component ``k`` becomes ``N(m mu_k, m² Sigma_k + s² I)``.

The metrics for samples in R^d are in :mod:`fsdiff.points.metrics`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .._checks import batch_times
from .._seeds import SPLIT, derived
from ..sde import SDE

__all__ = [
    "GaussianMixture", "GMMFamily",
]


class GaussianMixture:
    """A Gaussian mixture in R^d, or a batch of ``B`` mixtures with the same number of components.

    Parameters
    ----------
    means : (K, d) or (B, K, d)
    covs : (K, d, d) or (B, K, d, d), symmetric positive definite
    weights : (K,) or (B, K), positive; normalised here

    Notes
    -----
    Point tensors follow the parameters: ``x (n, d)`` for one mixture, ``(B, n, d)`` for a batch.
    Computations run in float64; results come back in the input's dtype.
    """

    def __init__(self, means: torch.Tensor, covs: torch.Tensor, weights: torch.Tensor):
        means, covs, weights = (torch.as_tensor(a, dtype=torch.float64) for a in (means, covs, weights))
        if means.ndim not in (2, 3):
            raise ValueError(f"means must be (K, d) or (B, K, d); got {tuple(means.shape)}")
        lead = means.shape[:-1]
        d = means.shape[-1]
        if tuple(covs.shape) != (*lead, d, d):
            raise ValueError(f"covs has shape {tuple(covs.shape)}; expected {(*lead, d, d)} to match means {tuple(means.shape)}")
        if tuple(weights.shape) != tuple(lead):
            raise ValueError(f"weights has shape {tuple(weights.shape)}; expected {tuple(lead)}")
        if not (weights > 0).all() or not torch.isfinite(weights).all():
            raise ValueError("weights must be positive and finite")
        try:
            self._chol = torch.linalg.cholesky(covs)
        except RuntimeError as e:
            raise ValueError(f"covs must be symmetric positive definite: {e}") from None
        self.batched = means.ndim == 3
        self.means, self.covs = means, covs
        self.weights = weights / weights.sum(-1, keepdim=True)

    # ------------------------------------------------------------------ basics
    @property
    def dim(self) -> int:
        return self.means.shape[-1]

    @property
    def n_components(self) -> int:
        return self.means.shape[-2]

    @property
    def batch_size(self) -> int | None:
        return self.means.shape[0] if self.batched else None

    def __getitem__(self, i: int | Sequence[int] | torch.Tensor) -> "GaussianMixture":
        """``batch[i]``: one mixture for an int, a sub-batch for a list / 1-D index tensor."""
        if not self.batched:
            raise TypeError("indexing needs a batch of mixtures")
        if not isinstance(i, int):
            i = torch.as_tensor(i, dtype=torch.long)
            if i.ndim != 1:
                raise ValueError(f"index must be an int or 1-D; got shape {tuple(i.shape)}")
        out = GaussianMixture.__new__(GaussianMixture)
        out.means, out.covs, out.weights, out._chol = self.means[i], self.covs[i], self.weights[i], self._chol[i]
        out.batched = out.means.ndim == 3
        return out

    @staticmethod
    def stack(mixtures: Sequence["GaussianMixture"]) -> "GaussianMixture":
        """A batch ``(B, ...)`` from unbatched mixtures with equal ``K`` and ``d``."""
        if not mixtures or any(m.batched for m in mixtures):
            raise ValueError("stack needs a non-empty list of unbatched mixtures")
        return GaussianMixture(torch.stack([m.means for m in mixtures]), torch.stack([m.covs for m in mixtures]),
                               torch.stack([m.weights for m in mixtures]))

    def to_dict(self) -> dict:
        return {"means": self.means.tolist(), "covs": self.covs.tolist(), "weights": self.weights.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "GaussianMixture":
        return cls(torch.tensor(d["means"]), torch.tensor(d["covs"]), torch.tensor(d["weights"]))

    def mean(self) -> torch.Tensor:
        """Mixture mean, ``(d,)`` or ``(B, d)``."""
        return (self.weights[..., None] * self.means).sum(-2)

    # ---------------------------------------------------------------- sampling
    def sample(self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Exact draws: ``(n, d)``, or ``(B, n, d)`` for a batch."""
        if n < 1:
            raise ValueError(f"n must be >= 1; got {n}")
        w = self.weights if self.batched else self.weights[None]
        mu = self.means if self.batched else self.means[None]
        L = self._chol if self.batched else self._chol[None]
        B = w.shape[0]
        comp = torch.multinomial(w, n, replacement=True, generator=generator)  # (B, n)
        z = torch.randn(B, n, self.dim, generator=generator, dtype=torch.float64)
        idx = comp[..., None].expand(B, n, self.dim)
        m = torch.gather(mu, 1, idx)
        Lc = torch.gather(L, 1, comp[..., None, None].expand(B, n, self.dim, self.dim))
        x = m + (Lc @ z[..., None])[..., 0]
        x = x.to(dtype)
        return x if self.batched else x[0]

    def sample_perturbed(self, n: int, t: torch.Tensor | float, sde: SDE, generator: torch.Generator | None = None,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Draws from ``p_t``: ``m(t) X_0 + s(t) Z``; ``t`` scalar or one per point."""
        x0 = self.sample(n, generator, torch.float64)
        t = batch_times(t, tuple(x0.shape[:-1]))
        z = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
        return (sde.mean_scale(t)[..., None] * x0 + sde.std(t)[..., None] * z).to(dtype)

    # --------------------------------------------------------- exact densities
    def _terms(self, x: torch.Tensor, t: torch.Tensor | float | None, sde: SDE | None):
        """Per-component ``log w_k N(x; m mu_k, C_k)`` and ``C_k^{-1}(x - m mu_k)``, shapes (..., n, K), (..., n, K, d)."""
        x64 = x.to(torch.float64)
        if x64.shape[-1] != self.dim or x64.ndim != (3 if self.batched else 2):
            want = "(B, n, d)" if self.batched else "(n, d)"
            raise ValueError(f"x has shape {tuple(x.shape)}; expected {want} with d = {self.dim}")
        if self.batched and x64.shape[0] != self.batch_size:
            raise ValueError(f"x has batch {x64.shape[0]} but the mixture batch is {self.batch_size}")
        mu = self.means.unsqueeze(-3)  # (..., 1, K, d)
        cov = self.covs.unsqueeze(-4)  # (..., 1, K, d, d)
        if sde is None:
            if t is not None:
                raise ValueError("a time t needs an sde")
            C, mean = cov, mu
        else:
            tt = batch_times(0.0 if t is None else t, tuple(x64.shape[:-1]))
            m, s = sde.mean_scale(tt), sde.std(tt)  # (..., n)
            eye = torch.eye(self.dim, dtype=torch.float64)
            C = m[..., None, None, None] ** 2 * cov + (s[..., None, None, None] ** 2) * eye
            mean = m[..., None, None] * mu
        diff = x64.unsqueeze(-2) - mean  # (..., n, K, d)
        L = torch.linalg.cholesky(C)
        sol = torch.cholesky_solve(diff[..., None], L)[..., 0]
        logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        logw = torch.log(self.weights).unsqueeze(-2)
        logn = logw - 0.5 * (diff * sol).sum(-1) - 0.5 * logdet - 0.5 * self.dim * math.log(2 * math.pi)
        return logn, sol

    def log_prob(self, x: torch.Tensor, t: torch.Tensor | float | None = None, sde: SDE | None = None) -> torch.Tensor:
        """``log p_t(x)`` (``log p_0`` of the data when ``sde`` is None): ``(n,)`` or ``(B, n)``, float64."""
        logn, _ = self._terms(x, t, sde)
        return torch.logsumexp(logn, dim=-1)

    def score(self, x: torch.Tensor, t: torch.Tensor | float | None = None, sde: SDE | None = None) -> torch.Tensor:
        """Exact ``grad_x log p_t(x)``, same shape and dtype as ``x``; ``t`` scalar or one per point."""
        logn, sol = self._terms(x, t, sde)
        resp = torch.softmax(logn, dim=-1)
        return (-(resp[..., None] * sol).sum(-2)).to(x.dtype)

    def kernel_mean_embedding(self, points: torch.Tensor, bandwidth: float) -> torch.Tensor:
        """Exact ``E_{y~nu} N(r; y, h² I)`` at ``points (M, d)``: ``sum_k w_k N(r; mu_k, Sigma_k + h² I)``.

        Returns ``(M,)`` or ``(B, M)`` float64.
        """
        if bandwidth <= 0:
            raise ValueError(f"bandwidth must be positive; got {bandwidth}")
        r = points.to(torch.float64)
        if r.ndim != 2 or r.shape[-1] != self.dim:
            raise ValueError(f"points must be (M, {self.dim}); got {tuple(points.shape)}")
        wide = GaussianMixture(self.means, self.covs + bandwidth**2 * torch.eye(self.dim, dtype=torch.float64), self.weights)
        x = r.expand(self.batch_size, *r.shape) if self.batched else r
        return wide.log_prob(x).exp()


@dataclass(frozen=True)
class GMMFamily:
    """Mixtures built from the cells of a lattice; test mixtures are held-out cell combinations.

    Parameters
    ----------
    lattice : (rows, cols) of cells; cell centres ``spacing * (i - (rows-1)/2, j - (cols-1)/2)``.
    spacing : distance between neighbouring cell centres.
    n_components : cells per mixture (``K``).
    component_std : base standard deviation of each component.
    anisotropy : 0 gives isotropic components; ``a > 0`` gives each cell a covariance
        ``R diag(e^a, e^-a) R^T std²`` with a random rotation (from ``seed``).
    random_weights : if True each cell has a weight in ``[0.5, 1.5]`` (from ``seed``), normalised
        within a mixture; else equal weights.
    test_fraction : share of all combinations held out for testing (at least one).
    seed : seeds cell covariances, weights and the split (a private generator).
    box_margin : the embedding box extends this far beyond the outermost cell centres.
    """

    lattice: tuple[int, int] = (3, 3)
    spacing: float = 1.0
    n_components: int = 3
    component_std: float = 0.15
    anisotropy: float = 0.0
    random_weights: bool = False
    test_fraction: float = 0.2
    seed: int = 0
    box_margin: float = 1.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "lattice", tuple(int(v) for v in self.lattice))
        if len(self.lattice) != 2 or min(self.lattice) < 1:
            raise ValueError(f"lattice must be two positive ints; got {self.lattice}")
        n_cells = self.lattice[0] * self.lattice[1]
        if not 1 <= self.n_components < n_cells:
            raise ValueError(f"n_components must be in [1, {n_cells - 1}] for a {self.lattice} lattice; got {self.n_components}")
        if self.spacing <= 0 or self.component_std <= 0 or self.box_margin <= 0 or self.anisotropy < 0:
            raise ValueError("spacing, component_std and box_margin must be positive and anisotropy >= 0")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must lie in (0, 1); got {self.test_fraction}")
        if len(self.combinations) < 2:
            raise ValueError("the family needs at least two combinations to split")

    # ------------------------------------------------------------------ cells
    @property
    def n_cells(self) -> int:
        return self.lattice[0] * self.lattice[1]

    def cell_centres(self) -> torch.Tensor:
        """``(n_cells, 2)`` float64, row-major cell order."""
        r, c = self.lattice
        ii, jj = torch.meshgrid(torch.arange(r, dtype=torch.float64), torch.arange(c, dtype=torch.float64), indexing="ij")
        return self.spacing * torch.stack([ii - (r - 1) / 2, jj - (c - 1) / 2], -1).reshape(-1, 2)

    def _cell_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        n = self.n_cells
        angles = torch.rand(n, generator=g, dtype=torch.float64) * math.pi
        raw_w = 0.5 + torch.rand(n, generator=g, dtype=torch.float64)
        cos, sin = angles.cos(), angles.sin()
        R = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        a = self.anisotropy
        D = torch.diag(torch.tensor([math.exp(a), math.exp(-a)], dtype=torch.float64)) * self.component_std**2
        covs = R @ D @ R.transpose(-1, -2)
        weights = raw_w if self.random_weights else torch.ones(n, dtype=torch.float64)
        return covs, weights

    # ---------------------------------------------------------- combinations
    @property
    def combinations(self) -> list[tuple[int, ...]]:
        """All cell combinations (sorted tuples), in lexicographic order."""
        return list(itertools.combinations(range(self.n_cells), self.n_components))

    def split(self) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
        """``(train, test)`` lists of combinations; disjoint, seeded by ``seed``."""
        combos = self.combinations
        g = derived(self.seed, SPLIT)
        perm = torch.randperm(len(combos), generator=g).tolist()
        n_test = min(len(combos) - 1, max(1, round(self.test_fraction * len(combos))))
        test = sorted(combos[i] for i in perm[:n_test])
        train = sorted(combos[i] for i in perm[n_test:])
        return train, test

    @property
    def train_combinations(self) -> list[tuple[int, ...]]:
        return self.split()[0]

    @property
    def test_combinations(self) -> list[tuple[int, ...]]:
        return self.split()[1]

    def mixture(self, combo: Sequence[int]) -> GaussianMixture:
        """The mixture of the cells in ``combo``."""
        combo = tuple(int(c) for c in combo)
        if len(combo) != self.n_components or len(set(combo)) != len(combo) or not all(0 <= c < self.n_cells for c in combo):
            raise ValueError(f"combo must be {self.n_components} distinct cells in [0, {self.n_cells}); got {combo}")
        covs, weights = self._cell_params()
        idx = torch.tensor(combo)
        return GaussianMixture(self.cell_centres()[idx], covs[idx], weights[idx])

    def mixtures(self, combos: Sequence[Sequence[int]]) -> GaussianMixture:
        """A batch of mixtures, ``B = len(combos)``."""
        return GaussianMixture.stack([self.mixture(c) for c in combos])

    def family_mixture(self, combos: Sequence[Sequence[int]] | None = None) -> GaussianMixture:
        """The uniform mixture over ``combos`` (default: the training set), as one big GMM.

        This is the law an unconditional model of the family learns.
        """
        combos = self.train_combinations if combos is None else combos
        ms = [self.mixture(c) for c in combos]
        return GaussianMixture(torch.cat([m.means for m in ms]), torch.cat([m.covs for m in ms]),
                               torch.cat([m.weights / len(ms) for m in ms]))

    def box(self) -> tuple[tuple[float, float], float]:
        """Embedding box ``origin + [0, length)^2``: ``(origin, length)``, square, centred at 0."""
        length = self.spacing * (max(self.lattice) - 1) + 2 * self.box_margin
        return (-length / 2, -length / 2), length

    def to_dict(self) -> dict:
        return {"lattice": list(self.lattice), "spacing": self.spacing, "n_components": self.n_components,
                "component_std": self.component_std, "anisotropy": self.anisotropy,
                "random_weights": self.random_weights, "test_fraction": self.test_fraction, "seed": self.seed,
                "box_margin": self.box_margin}


# --------------------------------------------------------------------------- point metrics
