"""Resolution-aware metrics between sets of functions.

Every metric takes sample sets ``x`` of shape ``(n, C, *grid.shape)`` together with their
:class:`~fsdiff.grid.Grid` and measures functions, not pixel arrays:

* distances are L² distances with the grid's quadrature (``||u||² = |cell| sum u²``), so they
  converge as the grid is refined instead of growing with the number of points;
* spectra use forward-normalised Fourier coefficients times ``|D|`` and physical wavenumbers,
  so a sample of ``N(0, Q)`` has expected spectrum ``lambda_k`` at every resolution;
* random projections use *nested* random functions drawn from a trace-class Gaussian
  measure, so the same generator seed gives the same directions at every resolution.

Conventions
-----------
* Distances (``energy_mmd`` aside) are returned in the units of the L² norm, as Python floats.
* ``energy_mmd`` is the energy distance ``2E||X-Y|| - E||X-X'|| - E||Y-Y'||`` (units of the
  L² norm; it is *not* squared). Unbiased U-statistic by default (can be slightly negative).
* ``frechet_distance`` / ``fourier_frechet_distance`` return the *squared* 2-Wasserstein
  distance between Gaussian fits (the FID convention).
* Metrics comparing two sets on one grid raise ``ValueError`` naming both shapes when the
  sets differ in shape (resample first with :func:`fsdiff.resample`). Spectral metrics
  (``spectrum_error``, ``fourier_frechet_distance``) accept a second grid, since Fourier
  modes are shared by all grids of one domain. ``pointwise_value_distance`` takes no grid:
  pooled point values of any uniform grid are samples of the same one-point law.
* Non-finite input raises ``ValueError``; randomness comes only from a passed generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..covariance import Covariance, Matern
from ..grid import Grid

__all__ = [
    "pairwise_l2",
    "shell_average",
    "radial_spectrum",
    "spectrum_error",
    "energy_mmd",
    "energy_distance_rows",
    "random_directions",
    "project",
    "wasserstein_1d",
    "sliced_wasserstein",
    "gaussian_sliced_wasserstein",
    "fourier_features",
    "fourier_frechet_distance",
    "gaussian_frechet",
    "frechet_distance",
    "vendi_score",
    "pointwise_value_distance",
    "MemorizationResult",
    "memorization",
    "memorization_rows",
    "MEMORIZATION_THRESHOLD",
]

#: ratio (distance to nearest training sample) / (median leave-one-out nearest-neighbour
#: distance inside the training set) below which a generated sample counts as a copy.
#: 1/3 follows the "nearest / second nearest < 1/3" rule of Yoon et al. (2023) and
#: Somepalli et al. (2023): a copy sits three times closer to a training item than
#: training items sit to each other.
MEMORIZATION_THRESHOLD = 1.0 / 3.0


# --------------------------------------------------------------------------- input checks
def _check_set(x: torch.Tensor, grid: Grid, name: str = "x", min_n: int = 1) -> torch.Tensor:
    """Validate a sample set ``(n, C, *grid.shape)`` (finite, at least ``min_n`` samples)."""
    grid.check(x, name, min_leading=2, finite=True)
    if x.ndim != grid.ndim + 2:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}; expected a sample set (n, channels, {', '.join(map(str, grid.shape))})"
        )
    if x.shape[0] < min_n:
        raise ValueError(f"{name} has {x.shape[0]} samples; this metric needs at least {min_n}")
    return x


def _check_pair(x: torch.Tensor, y: torch.Tensor, grid: Grid, min_n: int = 1, names: tuple[str, str] = ("x", "y")) -> None:
    """Both sets on the same grid: raise ``ValueError`` naming both shapes otherwise."""
    for t, nm in zip((x, y), names):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{nm} must be a torch.Tensor, got {type(t).__name__}")
    if tuple(x.shape[1:]) != tuple(y.shape[1:]):
        raise ValueError(
            f"{names[0]} has shape {tuple(x.shape)} but {names[1]} has shape {tuple(y.shape)}: both sets must hold "
            f"the same channels on the same grid {grid!r} (resample one of them with fsdiff.resample first)"
        )
    _check_set(x, grid, names[0], min_n)
    _check_set(y, grid, names[1], min_n)


def _flat(x: torch.Tensor, grid: Grid) -> torch.Tensor:
    """``(n, C, *shape) -> (n, F)`` float64, scaled by ``sqrt(cell volume)`` so Euclidean = L²."""
    return x.detach().reshape(x.shape[0], -1).to(torch.float64) * math.sqrt(grid.cell_volume)


#: squared distances below this fraction of ``|a|² + |b|²`` (after centring) are round-off of
#: the Gram formula and are set to 0 (distances below ~3e-7 of the norms count as equal)
_GRAM_FLOOR = 1e-13


def _sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between rows, ``(n, F) x (m, F) -> (n, m)``, float64, >= 0.

    Gram formula after centring both sets on the mean of ``a`` (less cancellation);
    round-off below ``_GRAM_FLOOR`` is set to 0 so identical rows are at distance exactly 0.
    """
    c = a.mean(0, keepdim=True)
    a, b = a - c, b - c
    na, nb = a.square().sum(1)[:, None], b.square().sum(1)[None, :]
    d2 = na + nb - 2.0 * (a @ b.T)
    d2[d2 <= _GRAM_FLOOR * (na + nb)] = 0.0
    return d2


def pairwise_l2(x: torch.Tensor, y: torch.Tensor, grid: Grid) -> torch.Tensor:
    """L² distances ``||x_i - y_j||`` with quadrature: ``(n, C, *shape) x (m, C, *shape) -> (n, m)`` float64."""
    _check_pair(x, y, grid)
    return _sqdist(_flat(x, grid), _flat(y, grid)).sqrt_()


# --------------------------------------------------------------------------- spectra
def _shell_index(grid: Grid) -> tuple[torch.Tensor, float, int]:
    """Shell of every rfft entry, the shell width and the number of complete shells.

    Shell ``j`` holds the modes with ``|omega| in [(j - 1/2) dw, (j + 1/2) dw)``,
    ``dw = 2 pi / max(L)`` (the fundamental angular wavenumber; for the unit box shell ``j``
    is the integer ``|k|`` rounded). Shell ``j`` is *complete* (all its continuum modes are
    kept by the grid) iff ``(j + 1/2) dw <= min_i 2 pi (K_i + 1) / L_i``.
    """
    dw = 2 * math.pi / max(grid.length)
    omega = grid.omega_squared.sqrt()
    idx = torch.floor(omega / dw + 0.5).to(torch.int64)
    lim = min(2 * math.pi * (K + 1) / L for K, L in zip(grid.max_modes, grid.length))
    n_complete = int(math.floor(lim / dw - 0.5 + 1e-9)) + 1
    return idx, dw, n_complete


def shell_average(values: torch.Tensor, grid: Grid, n_bins: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Average a real quantity given per Fourier mode (rfft layout) over radial shells.

    Each shell average counts every kept mode of the full lattice once (rfft entries weighted
    by :attr:`Grid.rfft_weights`; dropped Nyquist modes excluded).

    Parameters
    ----------
    values : ``(..., *grid.rfft_shape)`` real, e.g. ``cov.eigenvalues(grid)``.
    n_bins : number of shells from ``|omega| = 0``; default: the complete shells only (those
        that every finer grid of the domain sees identically). Raises if a shell is empty.

    Returns
    -------
    omega : ``(n_bins,)`` float64, shell centres ``j * 2 pi / max(L)`` (physical angular wavenumber).
    avg : ``(..., n_bins)`` float64.
    """
    if tuple(values.shape[-grid.ndim:]) != grid.rfft_shape:
        raise ValueError(f"values have shape {tuple(values.shape)}, expected (..., {grid.rfft_shape}) for {grid!r}")
    idx, dw, n_complete = _shell_index(grid)
    nb = n_complete if n_bins is None else int(n_bins)
    if nb < 1:
        raise ValueError(f"n_bins must be positive; got {n_bins}")
    w = grid.rfft_weights * grid.mode_mask
    sel = (idx < nb) & (w > 0)
    flat_idx = idx[sel]
    wsel = w[sel]
    counts = torch.bincount(flat_idx, weights=wsel, minlength=nb)
    if (counts[:nb] == 0).any():
        empty = torch.nonzero(counts[:nb] == 0).flatten().tolist()
        raise ValueError(f"shells {empty} hold no kept mode of {grid!r}; use n_bins <= {n_complete}")
    lead = values.shape[: values.ndim - grid.ndim]
    v = values.to(torch.float64).reshape(*lead, -1)[..., sel.flatten()] * wsel
    v2 = v.reshape(-1, v.shape[-1])
    sums = torch.zeros(v2.shape[0], nb, dtype=torch.float64)
    sums.index_add_(1, flat_idx, v2)
    avg = (sums / counts[:nb]).reshape(*lead, nb)
    return torch.arange(nb, dtype=torch.float64) * dw, avg


def radial_spectrum(x: torch.Tensor, grid: Grid, n_bins: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Radially averaged power spectrum of a sample set, mean over samples and channels.

    Power of mode k is ``|D| |u_hat_k|²`` with forward-normalised coefficients, so for
    ``u ~ N(0, Q)`` its expectation is the eigenvalue ``lambda_k`` at every resolution and the
    spectrum is the shell average of the eigenvalues (compare with
    ``shell_average(Q.eigenvalues(grid), grid)``). By Parseval,
    ``sum_k power_k = ||u||²``. Shells: see :func:`shell_average`.

    Shapes: ``x (n, C, *grid.shape)`` -> ``(omega (n_bins,), power (n_bins,))``, float64.
    """
    _check_set(x, grid)
    coeff = grid.rfft(x.detach().to(torch.float64))
    power = coeff.abs().square().mean(dim=(0, 1)) * grid.volume
    return shell_average(power, grid, n_bins)


def spectrum_error(
    x: torch.Tensor, y: torch.Tensor, grid: Grid, grid_y: Grid | None = None, n_bins: int | None = None
) -> float:
    """RMS log-spectrum error ``sqrt(mean_j (log P_x(j) - log P_y(j))²)`` over shared shells.

    ``y`` may live on ``grid_y`` (another resolution of the same domain); the shells compared
    are those complete on both grids (or the first ``n_bins``). A value ``e`` means the
    spectra differ by a factor ``exp(e)`` on average (RMS). Raises if a shell has zero power.
    """
    gy = grid if grid_y is None else grid_y
    if grid_y is None:
        _check_pair(x, y, grid)
    if not np.allclose(grid.length, gy.length, rtol=1e-12):
        raise ValueError(f"grids describe different domains: {grid!r} vs {gy!r}")
    nb = min(_shell_index(grid)[2], _shell_index(gy)[2]) if n_bins is None else n_bins
    _, px = radial_spectrum(x, grid, nb)
    _, py = radial_spectrum(y, gy, nb)
    if (px <= 0).any() or (py <= 0).any():
        raise ValueError("a shell has zero power, so its log-spectrum is undefined; restrict n_bins")
    return float((px.log() - py.log()).square().mean().sqrt())


# --------------------------------------------------------------------------- energy distance
def _sum_dist(a: torch.Tensor, b: torch.Tensor, chunk: int, same: bool = False) -> float:
    """``sum_ij ||a_i - b_j||`` in row chunks (memory ``chunk x m``); ``same``: a is b, diagonal excluded."""
    total = 0.0
    for s in range(0, a.shape[0], chunk):
        d = _sqdist(a[s : s + chunk], b).sqrt_()
        if same:
            r = torch.arange(d.shape[0])
            d[r, s + r] = 0.0
        total += float(d.sum())
    return total


def energy_mmd(x: torch.Tensor, y: torch.Tensor, grid: Grid, unbiased: bool = True, chunk: int = 2048) -> float:
    """Energy distance (MMD with the Riesz kernel, r = 1) under the L² metric of ``grid``.

    ``E = 2 E||X - Y|| - E||X - X'|| - E||Y - Y'||``, zero iff the laws agree (for laws with
    a first moment). ``unbiased=True``: U-statistic (within-set means over ``i != j``;
    expectation exactly 0 under ``P = Q``, may be slightly negative; needs 2 samples per
    set); ``False``: V-statistic (all pairs, >= 0, biased upwards by ``O(1/n)``).
    For a small mean shift ``delta`` between otherwise equal laws, ``E = O(||delta||²)``.

    Cost ``O((n + m)² F)``; memory ``chunk x max(n, m)`` distances at a time.
    Shapes: ``x (n, C, *shape)``, ``y (m, C, *shape)`` on the same grid -> float.
    """
    _check_pair(x, y, grid, min_n=2 if unbiased else 1)
    return energy_distance_rows(_flat(x, grid), _flat(y, grid), unbiased, chunk)


def energy_distance_rows(a: torch.Tensor, b: torch.Tensor, unbiased: bool = True, chunk: int = 2048) -> float:
    """The energy distance of :func:`energy_mmd` between the rows of ``a (n, F)`` and ``b (m, F)`` (Euclidean)."""
    n, m = a.shape[0], b.shape[0]
    dxy = _sum_dist(a, b, chunk) / (n * m)
    sxx, syy = _sum_dist(a, a, chunk, same=True), _sum_dist(b, b, chunk, same=True)
    if unbiased:
        exx, eyy = sxx / (n * (n - 1)), syy / (m * (m - 1))
    else:
        exx, eyy = sxx / n**2, syy / m**2
    return float(2 * dxy - exx - eyy)


# --------------------------------------------------------------------------- sliced Wasserstein
def _default_directions(ndim: int) -> Covariance:
    """Matérn ``(tau² - Laplacian)^-(d/2 + 1)``, tau = 2 pi: trace class with a slowly decaying tail."""
    return Matern(alpha=ndim / 2 + 1.0, tau=2 * math.pi)


def random_directions(
    grid: Grid,
    n: int,
    channels: int = 1,
    generator: torch.Generator | None = None,
    directions: Covariance | None = None,
) -> torch.Tensor:
    """``n`` random unit-L²-norm functions ``(n, channels, *grid.shape)`` float64.

    Drawn from ``N(0, Q_dir)`` (default ``Matern(alpha = d/2 + 1, tau = 2 pi)``), then divided
    by their L² norm. Q_dir must be trace class: white-noise directions would put ever more
    weight on unresolved modes as the grid is refined, and projections would vanish in the
    limit. Sampling is nested, so one seed gives the same directions (Fourier-restricted) at
    every resolution and projections converge as the grid is refined.
    """
    cov = directions if directions is not None else _default_directions(grid.ndim)
    cov.require_trace_class(grid.ndim)
    th = cov.sample(grid, n, channels=channels, generator=generator, dtype=torch.float64)
    return th / grid.norm(th).reshape(-1, *([1] * (grid.ndim + 1)))


def project(x: torch.Tensor, theta: torch.Tensor, grid: Grid) -> torch.Tensor:
    """L² projections ``<x_i, theta_j>``: ``(n, C, *shape) x (P, C, *shape) -> (n, P)`` float64."""
    return _flat(x, grid) @ _flat(theta, grid).T


def wasserstein_1d(a: torch.Tensor, b: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Exact p-Wasserstein distance between empirical laws on the line, batched.

    ``W_p^p = int_0^1 |F_a^-1(t) - F_b^-1(t)|^p dt``, evaluated exactly on the merged
    breakpoints of the two step quantile functions (sizes may differ).
    Shapes: ``a (..., n)``, ``b (..., m)`` -> ``(...)`` float64.
    """
    a = torch.sort(a.to(torch.float64), dim=-1).values
    b = torch.sort(b.to(torch.float64), dim=-1).values
    n, m = a.shape[-1], b.shape[-1]
    if n == m:
        return (a - b).abs().pow(p).mean(-1).pow(1.0 / p)
    t = torch.unique(torch.cat([torch.arange(1, n + 1, dtype=torch.float64) / n,
                                torch.arange(1, m + 1, dtype=torch.float64) / m]))
    t = torch.cat([t.new_zeros(1), t])
    t = t[torch.cat([torch.tensor([True]), t[1:] - t[:-1] > 1e-15])]
    mid = 0.5 * (t[1:] + t[:-1])
    dt = t[1:] - t[:-1]
    ia = torch.floor(mid * n).to(torch.int64).clamp_max(n - 1)
    ib = torch.floor(mid * m).to(torch.int64).clamp_max(m - 1)
    diff = (a[..., ia] - b[..., ib]).abs().pow(p)
    return (diff * dt).sum(-1).pow(1.0 / p)


def sliced_wasserstein(
    x: torch.Tensor,
    y: torch.Tensor,
    grid: Grid,
    n_projections: int = 128,
    generator: torch.Generator | None = None,
    directions: Covariance | None = None,
    p: float = 2.0,
) -> float:
    """Sliced p-Wasserstein distance with exact 1-D transport on random L² projections.

    ``SW_p = (mean_j W_p(<X, theta_j>, <Y, theta_j>)^p)^(1/p)``, ``theta_j`` from
    :func:`random_directions` (unit L² norm, nested, trace-class law). A deterministic shift
    ``Y = X + delta`` gives exactly ``(mean_j |<delta, theta_j>|^p)^(1/p)``.
    Shapes: ``x (n, C, *shape)``, ``y (m, C, *shape)`` -> float (units of the L² norm).
    """
    _check_pair(x, y, grid)
    th = random_directions(grid, n_projections, x.shape[1], generator, directions)
    w = wasserstein_1d(project(x, th, grid).T, project(y, th, grid).T, p)
    return float(w.pow(p).mean().pow(1.0 / p))


def gaussian_sliced_wasserstein(
    x: torch.Tensor,
    y: torch.Tensor,
    grid: Grid,
    n_projections: int = 128,
    generator: torch.Generator | None = None,
    directions: Covariance | None = None,
) -> float:
    """Sliced W2 between Gaussian fits of the projections (cheap, smooth, moment-only).

    For each direction the projections are fitted by ``N(mu, s²)`` (population std,
    ``ddof = 0``) and ``W2² = (mu_x - mu_y)² + (s_x - s_y)²``; returns
    ``sqrt(mean_j W2²)``. Same directions as :func:`sliced_wasserstein` for one seed.
    See :func:`fourier_frechet_distance` for the Gaussian fit of the full covariance.
    """
    _check_pair(x, y, grid)
    th = random_directions(grid, n_projections, x.shape[1], generator, directions)
    px, py = project(x, th, grid), project(y, th, grid)
    w2 = (px.mean(0) - py.mean(0)).square() + (px.std(0, correction=0) - py.std(0, correction=0)).square()
    return float(w2.mean().sqrt())


# --------------------------------------------------------------------------- Gaussian / Fréchet
def fourier_features(x: torch.Tensor, grid: Grid, max_mode: int) -> torch.Tensor:
    """Real coordinates of the modes ``|k_i| <= max_mode`` in an L²-orthonormal basis.

    Returns ``(n, F)`` float64 with ``||f(u)||_2 = ||P u||_{L²}``, ``P`` the projection on
    those modes (rfft entries scaled by ``sqrt(|D| w_k)``, real and imaginary parts; the
    always-zero imaginary part of ``k = 0`` is left out). Identical on every grid that keeps
    the modes, so it compares sets across resolutions.
    """
    _check_set(x, grid)
    if not 0 <= max_mode <= min(grid.max_modes):
        raise ValueError(f"max_mode={max_mode} must be in [0, {min(grid.max_modes)}] for {grid!r}")
    sel = torch.ones(grid.rfft_shape, dtype=torch.bool)
    for k in grid.wavenumbers:
        sel = sel & (k.abs() <= max_mode)
    zero = torch.zeros(grid.rfft_shape, dtype=torch.bool)
    zero[(0,) * grid.ndim] = True
    scale = (grid.rfft_weights * grid.volume).sqrt()
    c = grid.rfft(x.detach().to(torch.float64)) * scale
    c = c.reshape(*c.shape[:2], -1)
    re = c.real[..., sel.flatten()]
    im = c.imag[..., (sel & ~zero).flatten()]
    return torch.cat([re, im], dim=-1).reshape(x.shape[0], -1)


def _sqrtm_psd_trace(a: np.ndarray, b: np.ndarray) -> float:
    """``tr (A^1/2 B A^1/2)^1/2`` for symmetric PSD A, B via symmetric eigendecompositions."""
    wa, va = np.linalg.eigh(a)
    ra = (va * np.sqrt(np.clip(wa, 0.0, None))) @ va.T
    m = ra @ b @ ra
    wm = np.linalg.eigvalsh(0.5 * (m + m.T))
    return float(np.sqrt(np.clip(wm, 0.0, None)).sum())


def gaussian_frechet(mu1, cov1, mu2, cov2) -> float:
    """Squared W2 between ``N(mu1, cov1)`` and ``N(mu2, cov2)``.

    ``||mu1 - mu2||² + tr(cov1 + cov2 - 2 (cov1^1/2 cov2 cov1^1/2)^1/2)``, computed with
    symmetric eigendecompositions in float64 (no complex ``sqrtm``, stable for singular
    covariances); clipped at 0.
    """
    mu1, mu2 = np.asarray(mu1, np.float64).ravel(), np.asarray(mu2, np.float64).ravel()
    c1, c2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    d = mu1.size
    if mu2.size != d or c1.shape != (d, d) or c2.shape != (d, d):
        raise ValueError(f"shape mismatch: mu1 {mu1.shape}, cov1 {c1.shape}, mu2 {mu2.shape}, cov2 {c2.shape}")
    for nm, v in (("mu1", mu1), ("mu2", mu2), ("cov1", c1), ("cov2", c2)):
        if not np.isfinite(v).all():
            raise ValueError(f"{nm} contains non-finite values")
    c1, c2 = 0.5 * (c1 + c1.T), 0.5 * (c2 + c2.T)
    val = float(np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2.0 * _sqrtm_psd_trace(c1, c2))
    return max(val, 0.0)


def frechet_distance(feat_x: torch.Tensor, feat_y: torch.Tensor) -> float:
    """Fréchet distance (squared W2 of Gaussian fits, FID convention) between feature sets.

    Shapes: ``(n, F)`` and ``(m, F)``, ``n, m >= 2``; covariances with ``ddof = 1``.
    """
    fx, fy = (torch.as_tensor(f).detach().to(torch.float64).cpu().numpy() for f in (feat_x, feat_y))
    if fx.ndim != 2 or fy.ndim != 2 or fx.shape[1] != fy.shape[1]:
        raise ValueError(f"features must be (n, F) with equal F; got {fx.shape} and {fy.shape}")
    if fx.shape[0] < 2 or fy.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors per set; got {fx.shape[0]} and {fy.shape[0]}")
    if not (np.isfinite(fx).all() and np.isfinite(fy).all()):
        raise ValueError("features contain non-finite values")
    return gaussian_frechet(fx.mean(0), np.cov(fx, rowvar=False), fy.mean(0), np.cov(fy, rowvar=False))


def fourier_frechet_distance(
    x: torch.Tensor, y: torch.Tensor, grid: Grid, max_mode: int = 8, grid_y: Grid | None = None
) -> float:
    """Squared W2 between Gaussian fits of the full covariance in a truncated Fourier basis.

    Features are :func:`fourier_features` with ``|k_i| <= max_mode`` (an L²-orthonormal
    basis, so this is the Fréchet distance of the L² laws projected on those modes). ``y``
    may be on ``grid_y`` (same domain). With few samples relative to the ``~2 (2K+1)^d / 2``
    features the covariance estimate (and the distance) is biased upwards; compare values at
    equal sample sizes.
    """
    gy = grid if grid_y is None else grid_y
    if grid_y is None:
        _check_pair(x, y, grid, min_n=2)
    if not np.allclose(grid.length, gy.length, rtol=1e-12):
        raise ValueError(f"grids describe different domains: {grid!r} vs {gy!r}")
    return frechet_distance(fourier_features(x, grid, max_mode), fourier_features(y, gy, max_mode))


# --------------------------------------------------------------------------- Vendi
def vendi_score(x: torch.Tensor, grid: Grid, kernel: str = "rbf", bandwidth: float | None = None) -> float:
    """Vendi diversity ``exp(-sum_i l_i log l_i)``, ``l_i`` the eigenvalues of ``K / n``.

    Kernels (both with ``K_ii = 1``, built from L² quadrature):

    * ``"rbf"``: ``exp(-||u_i - u_j||² / (2 h²))``; ``h = bandwidth`` or, if None, the median
      of the off-diagonal L² distances (1 if all are zero).
    * ``"cosine"``: ``<u_i, u_j> / (||u_i|| ||u_j||)`` (raises on a zero function).

    Ranges from 1 (all samples identical) to n (mutually orthogonal / far apart samples).
    """
    _check_set(x, grid)
    a = _flat(x, grid)
    n = a.shape[0]
    if kernel == "rbf":
        d2 = _sqdist(a, a)
        d2.fill_diagonal_(0.0)
        if bandwidth is None:
            off = d2[~torch.eye(n, dtype=torch.bool)].sqrt()
            h = float(off.median()) if off.numel() else 1.0
            h = h if h > 0 else 1.0
        else:
            h = float(bandwidth)
            if not (math.isfinite(h) and h > 0):
                raise ValueError(f"bandwidth must be finite and positive; got {bandwidth}")
        k = torch.exp(-d2 / (2 * h * h))
    elif kernel == "cosine":
        nrm = a.norm(dim=1)
        if (nrm == 0).any():
            raise ValueError("cosine kernel is undefined for identically zero samples")
        u = a / nrm[:, None]
        k = u @ u.T
    else:
        raise ValueError(f"unknown kernel {kernel!r}; expected 'rbf' or 'cosine'")
    lam = torch.linalg.eigvalsh(0.5 * (k + k.T) / n).clamp_min(0.0)
    lam = lam[lam > 0]
    return float(torch.exp(-(lam * lam.log()).sum()))


# --------------------------------------------------------------------------- point values
def pointwise_value_distance(
    x: torch.Tensor, y: torch.Tensor, p: float = 1.0, n_quantiles: int | None = None
) -> float:
    """p-Wasserstein distance between the laws of point values ``u(xi)``, xi uniform on D.

    The pooled values of a set on a uniform grid are equally weighted samples of the
    one-point law (grid points are quadrature nodes with equal weights), so ``x`` and ``y``
    may come from different resolutions: ``(n, C, *shape_x)`` and ``(m, C, *shape_y)`` with
    the same channel count. Per channel the exact quantile-based 1-D ``W_p`` (default W1) of
    the pooled values; mean over channels. ``n_quantiles`` evaluates both quantile functions
    at ``(i + 1/2) / n_quantiles`` instead (approximate, bounded memory for huge sets).
    """
    for t, nm in ((x, "x"), (y, "y")):
        if not isinstance(t, torch.Tensor) or t.ndim < 3:
            raise ValueError(f"{nm} must be a sample set (n, channels, *spatial); got shape {tuple(getattr(t, 'shape', ()))}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{nm} contains non-finite values (NaN or inf)")
    if x.shape[1] != y.shape[1] or x.ndim != y.ndim:
        raise ValueError(f"x has shape {tuple(x.shape)} and y has shape {tuple(y.shape)}: channels and dimension must agree")
    a = x.detach().to(torch.float64).transpose(0, 1).reshape(x.shape[1], -1)
    b = y.detach().to(torch.float64).transpose(0, 1).reshape(y.shape[1], -1)
    if n_quantiles is None:
        w = wasserstein_1d(a, b, p)
    else:
        nq = int(n_quantiles)
        if nq < 1:
            raise ValueError(f"n_quantiles must be positive; got {n_quantiles}")
        q = (torch.arange(nq, dtype=torch.float64) + 0.5) / nq
        qa = torch.sort(a, dim=-1).values[:, torch.floor(q * a.shape[-1]).to(torch.int64)]
        qb = torch.sort(b, dim=-1).values[:, torch.floor(q * b.shape[-1]).to(torch.int64)]
        w = wasserstein_1d(qa, qb, p)
    return float(w.mean())


# --------------------------------------------------------------------------- memorization
@dataclass(frozen=True)
class MemorizationResult:
    """Nearest-neighbour memorization statistics.

    ratios : ``(n,)`` distance to the nearest training sample / ``reference``.
    nearest : ``(n,)`` index of that training sample.
    reference : median leave-one-out nearest-neighbour L² distance inside the training set.
    threshold : ratio below which a sample counts as a copy.
    fraction : fraction of generated samples with ``ratio < threshold``.
    """

    ratios: torch.Tensor
    nearest: torch.Tensor
    reference: float
    threshold: float
    fraction: float

    def to_dict(self) -> dict:
        r = self.ratios
        return {
            "reference": self.reference,
            "threshold": self.threshold,
            "fraction_memorized": self.fraction,
            "ratio_min": float(r.min()),
            "ratio_median": float(r.median()),
            "ratio_mean": float(r.mean()),
        }


def _nearest(q: torch.Tensor, ref: torch.Tensor, chunk: int, exclude_self_offset: int | None = None):
    """Nearest row of ``ref`` for each row of ``q`` (float64 flats), chunked; optionally leave-one-out."""
    dmin = torch.empty(q.shape[0], dtype=torch.float64)
    imin = torch.empty(q.shape[0], dtype=torch.int64)
    for s in range(0, q.shape[0], chunk):
        qs = q[s : s + chunk]
        d2 = _sqdist(qs, ref)
        if exclude_self_offset is not None:
            rows = torch.arange(qs.shape[0])
            d2[rows, exclude_self_offset + s + rows] = math.inf
        v, i = d2.min(1)
        dmin[s : s + chunk], imin[s : s + chunk] = v.sqrt(), i
    return dmin, imin


def memorization(
    generated: torch.Tensor,
    train: torch.Tensor,
    grid: Grid,
    threshold: float = MEMORIZATION_THRESHOLD,
    n_reference: int | None = None,
    generator: torch.Generator | None = None,
    chunk: int = 1024,
) -> MemorizationResult:
    """Nearest-training-neighbour ratios of generated samples (L² with quadrature).

    ``ratio_i = min_j ||g_i - t_j|| / r``, ``r`` = median over training samples of the
    leave-one-out nearest-neighbour distance ``min_{j != i} ||t_i - t_j||``. A copy of a
    training item has ratio ~0, a fresh sample from the data law ~1. With ``n_reference``
    the median is estimated from that many randomly chosen training samples (each still
    searched against the whole set) to bound the cost on large sets.

    Shapes: ``generated (n, C, *shape)``, ``train (N, C, *shape)``, ``N >= 2``.
    """
    _check_pair(generated, train, grid, names=("generated", "train"))
    return memorization_rows(_flat(generated, grid), _flat(train, grid), threshold, n_reference, generator, chunk)


def memorization_rows(g: torch.Tensor, t: torch.Tensor, threshold: float = MEMORIZATION_THRESHOLD,
                      n_reference: int | None = None, generator: torch.Generator | None = None,
                      chunk: int = 1024) -> MemorizationResult:
    """:func:`memorization` of the rows of ``g (n, F)`` against ``t (N, F)`` (Euclidean distances)."""
    if t.shape[0] < 2:
        raise ValueError(f"train has {t.shape[0]} samples; the leave-one-out reference needs at least 2")
    if not (math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be finite and positive; got {threshold}")
    N = t.shape[0]
    if n_reference is None or n_reference >= N:
        ref_d, _ = _nearest(t, t, chunk, exclude_self_offset=0)
    else:
        idx = torch.randperm(N, generator=generator)[: int(n_reference)]
        ref_d = torch.empty(len(idx), dtype=torch.float64)
        for s in range(0, len(idx), chunk):
            ii = idx[s : s + chunk]
            d2 = _sqdist(t[ii], t)
            d2[torch.arange(len(ii)), ii] = math.inf
            ref_d[s : s + chunk] = d2.min(1).values.sqrt()
    ref = float(ref_d.median())
    if ref <= 0:
        raise ValueError("the training set has duplicate items (median nearest-neighbour distance 0); deduplicate it")
    d, i = _nearest(g, t, chunk)
    ratios = d / ref
    return MemorizationResult(ratios, i, ref, float(threshold), float((ratios < threshold).double().mean()))
