"""Nonlinear denoising score matching in R^d (Birrell, Katsoulakis, Rey-Bellet, Zhang, Zhu,
arXiv 2405.15625).

Forward process (VP time t, ``beta(t)`` from an fsdiff :class:`~fsdiff.sde.VPSDE`):

    dX = ½ beta(t) grad log pi_ref(X) dt + sqrt(beta(t)) dW,

an overdamped Langevin dynamics for a cheap reference mixture ``pi_ref`` fit to the data
(:func:`fit_reference_mixture`, k-means or EM), so ``pi_ref`` is invariant and the noising
keeps the data's clusters and their weights. With ``pi_ref = N(0, I)``
(:func:`standard_normal_reference`) the drift is ``-½ beta x``: the standard VP SDE.

The transition density has no closed form, so the loss uses one Euler–Maruyama step on a
uniform grid ``t_k = k dt`` (``dt = T / steps``):

    x_{n+1} = mu_n + sqrt(beta_n dt) xi,   mu_n = x_n + ½ beta_n grad log pi_ref(x_n) dt,
    loss    = | s(x_{n+1}, t_{n+1}) + xi / sqrt(beta_n dt) |²       (one-step DSM)

whose minimiser is the score of the EM chain's marginal at ``t_{n+1}``. The target is
``O(dt^-1/2)``, so the loss and its gradient have ``O(1/dt)`` variance. The **control
variate** subtracts ``2 s(mu_n, t_{n+1}) . xi / sqrt(beta_n dt) + (|xi|² - d) / (beta_n dt)``,
which has mean zero given ``x_n`` (``xi`` is independent of ``mu_n``) and cancels the
leading term: ``2 (s(x_{n+1}) - s(mu_n)) . xi / sqrt(beta dt) = O(1)``. The gradient's mean is
unchanged and its variance becomes ``O(1)``. A *learned* control variate ``c(mu_n, t)`` can
replace ``s(mu_n, t)`` (any function of ``mu_n`` keeps the mean); see :func:`ndsm_loss`.

Reverse sampling (:func:`ndsm_sample`) starts from ``pi_ref`` and integrates
``dY = [½ beta grad log pi_ref(Y) - beta s(Y, t)] dt`` backwards with EM on the same grid.
Score models follow the point-space protocol ``score(x (B, d), t (B,)) -> (B, d)``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..sde import SDE
from .diffusion import PointScore

__all__ = [
    "ReferenceMixture",
    "standard_normal_reference",
    "kmeans",
    "fit_reference_mixture",
    "NDSM",
    "ndsm_loss",
    "ndsm_sample",
    "point_dsm_loss",
    "per_sample_gradients",
]

_LOG2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------- reference mixture
@dataclass
class ReferenceMixture:
    """Isotropic Gaussian mixture ``sum_k w_k N(mu_k, v_k I)``: ``weights (K,)``, ``means (K, d)``, ``variances (K,)``."""

    weights: torch.Tensor
    means: torch.Tensor
    variances: torch.Tensor

    def __post_init__(self) -> None:
        K = self.weights.shape[0]
        if self.means.ndim != 2 or self.means.shape[0] != K or self.variances.shape != (K,):
            raise ValueError(f"weights {tuple(self.weights.shape)}, means {tuple(self.means.shape)}, "
                             f"variances {tuple(self.variances.shape)} do not describe one K-component mixture")
        if (self.weights <= 0).any() or (self.variances <= 0).any():
            raise ValueError("mixture weights and variances must be positive")

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, v = self.means.to(x.dtype), self.variances.to(x.dtype)
        diff = x[:, None, :] - mu[None]
        a = (torch.log(self.weights.to(x.dtype))[None] - 0.5 * diff.square().sum(-1) / v[None]
             - 0.5 * self.dim * (_LOG2PI + torch.log(v))[None])
        return a, diff, v

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log pi_ref(x)``, ``(B, d) -> (B,)`` (log-sum-exp)."""
        return torch.logsumexp(self._logits(x)[0], 1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``grad log pi_ref(x)``, ``(B, d) -> (B, d)``."""
        a, diff, v = self._logits(x)
        r = torch.softmax(a, 1)
        return -(r[..., None] * diff / v[None, :, None]).sum(1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior component probabilities ``(B, K)``."""
        return torch.softmax(self._logits(x)[0], 1)

    def sample(self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``n`` draws, ``(n, d)``."""
        k = torch.multinomial(self.weights.double(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means.double()[k] + self.variances.double()[k].sqrt()[:, None] * z).to(dtype)


def standard_normal_reference(dim: int) -> ReferenceMixture:
    """``N(0, I)`` in R^dim: NDSM with it is standard VP denoising score matching."""
    return ReferenceMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, dim, dtype=torch.float64),
                            torch.ones(1, dtype=torch.float64))


def kmeans(x: torch.Tensor, k: int, iters: int = 50, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding: returns ``(centres (k, d), labels (n,))``."""
    if x.ndim != 2 or not 1 <= k <= x.shape[0]:
        raise ValueError(f"need x (n, d) with n >= k >= 1; got {tuple(x.shape)} and k={k}")
    x = x.double()
    n = x.shape[0]
    c = x[torch.randint(n, (1,), generator=generator)]
    for _ in range(1, k):
        d2 = torch.cdist(x, c).square().min(1).values
        p = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1.0 / n)
        c = torch.cat([c, x[torch.multinomial(p, 1, generator=generator)]])
    labels = torch.cdist(x, c).argmin(1)
    for _ in range(iters):
        for j in range(k):
            sel = labels == j
            if sel.any():
                c[j] = x[sel].mean(0)
        new = torch.cdist(x, c).argmin(1)
        if torch.equal(new, labels):
            break
        labels = new
    return c, labels


def fit_reference_mixture(
    x: torch.Tensor, k: int, method: str = "em", iters: int = 100, min_var: float = 1e-3,
    generator: torch.Generator | None = None, n_init: int = 5,
) -> ReferenceMixture:
    """Fit an isotropic k-component mixture to ``x (n, d)``: ``"kmeans"`` (cluster fractions,
    means and per-cluster isotropic variances) or ``"em"`` (EM started from k-means).

    Both can stop in a poor local optimum (e.g. two centres on the heaviest cluster and one
    between two light ones), which biases every NDSM quantity that follows; ``n_init`` restarts
    from fresh k-means++ seeds keep the fit with the highest log-likelihood.
    """
    if method not in ("kmeans", "em"):
        raise ValueError(f"method must be 'kmeans' or 'em'; got {method!r}")
    if n_init < 1:
        raise ValueError(f"n_init must be >= 1; got {n_init}")
    x = x.double()
    best, best_ll = None, -math.inf
    for _ in range(n_init):
        _, labels = kmeans(x, k, generator=generator)
        mix = _m_step(x, torch.nn.functional.one_hot(labels, k).double(), min_var)
        if method == "em":
            for _ in range(iters):
                mix = _m_step(x, mix.responsibilities(x), min_var)
        ll = float(mix.log_prob(x).mean())
        if ll > best_ll:
            best, best_ll = mix, ll
    return best


def _m_step(x: torch.Tensor, r: torch.Tensor, min_var: float) -> ReferenceMixture:
    nk = r.sum(0).clamp_min(1e-8)
    means = (r.T @ x) / nk[:, None]
    var = (r * torch.cdist(x, means).square()).sum(0) / (nk * x.shape[1])
    w = nk / nk.sum()
    return ReferenceMixture(w.clamp_min(1e-12) / w.clamp_min(1e-12).sum(), means, var.clamp_min(min_var))


# ----------------------------------------------------------------------------- NDSM process
class NDSM:
    """The nonlinear forward process on a uniform grid ``t_k = k T / steps`` (VP time of ``sde``).

    Stability: one EM step multiplies ``x - mu_k`` near a component ``N(mu_k, v_k I)`` by
    ``1 - beta dt / (2 v_k)``, so tight reference components need ``steps > beta_max T / (4 v_min)``
    (raised as ``ValueError``; a warning above a quarter of that limit, where the EM chain's
    stationary variance ``2 v / (2 - r)``, ``r = beta dt / (2 v)``, is off by more than a third).

    ``sde`` supplies ``beta(t)`` (a :class:`~fsdiff.sde.VPSDE`); ``pi_ref`` the drift
    ``½ beta grad log pi_ref``. Methods: :meth:`drift`, :meth:`trajectories`, :meth:`loss`,
    :meth:`sample`.
    """

    def __init__(self, pi_ref: ReferenceMixture, sde: SDE, steps: int = 100):
        if steps < 1:
            raise ValueError(f"steps must be >= 1; got {steps}")
        if not hasattr(sde, "beta"):
            raise ValueError("NDSM needs an SDE with a beta(t) schedule (VPSDE)")
        self.pi_ref, self.sde, self.steps = pi_ref, sde, int(steps)
        self.T = float(sde.T)
        self.dt = self.T / self.steps
        self.times = torch.linspace(0.0, self.T, self.steps + 1, dtype=torch.float64)
        self.betas = sde.beta(self.times)
        # EM on a Gaussian component N(mu, v I) multiplies x - mu by 1 - beta dt / (2 v) per step
        rate = float(self.betas.max()) * self.dt / (2 * float(pi_ref.variances.min()))
        if rate >= 2:
            raise ValueError(
                f"steps={steps} is too few for this pi_ref: beta_max dt / (2 v_min) = {rate:.2f} >= 2 makes the EM "
                f"chain diverge; use steps > {math.ceil(float(self.betas.max()) * self.T / (4 * float(pi_ref.variances.min())))}"
            )
        if rate > 0.5:
            warnings.warn(f"NDSM: beta_max dt / (2 v_min) = {rate:.2f} > 0.5; the EM chain is inaccurate near the "
                          f"reference modes (more steps, or a wider pi_ref)", stacklevel=2)

    @staticmethod
    def steps_for(pi_ref: ReferenceMixture, sde: SDE, rate: float = 0.125, min_steps: int = 100) -> int:
        """Grid size with ``beta_max dt / (2 v_min) <= rate``: ``ceil(beta_max T / (2 v_min rate))``.

        ``rate = 0.125`` keeps EM's bias near the tightest reference mode small: on the
        imbalanced 2-D mixture of ``resolution_studies/ndsm_study.py`` the fraction of reverse
        samples off every mode fell from 2.3% at rate 0.44 to 0.23% at rate 0.11.
        """
        if not 0 < rate < 2:
            raise ValueError(f"rate must lie in (0, 2) (EM diverges at 2); got {rate}")
        beta_max = float(sde.beta(torch.linspace(0.0, float(sde.T), 1001, dtype=torch.float64)).max())
        return max(int(min_steps), math.ceil(beta_max * float(sde.T) / (2 * float(pi_ref.variances.min()) * rate)))

    def drift(self, x: torch.Tensor, k: torch.Tensor | int) -> torch.Tensor:
        """``½ beta(t_k) grad log pi_ref(x)`` for step indices ``k`` (int or ``(B,)``)."""
        b = self.betas[k].to(x.dtype)
        b = b[:, None] if b.ndim else b
        return 0.5 * b * self.pi_ref.score(x)

    def step(self, x: torch.Tensor, k: torch.Tensor | int, generator: torch.Generator | None = None):
        """One EM step from ``t_k``: returns ``(x_{k+1}, mu_k, xi, sqrt(beta_k dt))``."""
        b = self.betas[k].to(x.dtype)
        b = b[:, None] if b.ndim else b
        mu = x + self.drift(x, k) * self.dt
        xi = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        g = torch.sqrt(b * self.dt)
        return mu + g * xi, mu, xi, g

    @torch.no_grad()
    def trajectories(self, x0: torch.Tensor, generator: torch.Generator | None = None, upto: int | None = None) -> torch.Tensor:
        """Forward EM paths ``(upto + 1, B, d)`` (default the whole grid) from ``x0 (B, d)``."""
        upto = self.steps if upto is None else int(upto)
        out = [x0]
        x = x0
        for k in range(upto):
            x = self.step(x, k, generator)[0]
            out.append(x)
        return torch.stack(out)

    @torch.no_grad()
    def states_at(self, x0: torch.Tensor, n: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x_{n_b}`` for per-sample step indices ``n (B,)`` (simulating up to ``max n``), ``(B, d)``."""
        x = x0.clone()
        top = int(n.max()) if n.numel() else 0
        for k in range(top):
            active = (n > k)[:, None]
            x = torch.where(active, self.step(x, k, generator)[0], x)
        return x

    def loss(self, score: PointScore, x0: torch.Tensor, generator: torch.Generator | None = None, **kw) -> torch.Tensor:
        """:func:`ndsm_loss` with this process."""
        return ndsm_loss(score, x0, self, generator=generator, **kw)

    def sample(self, score: PointScore, n: int, generator: torch.Generator | None = None, **kw) -> torch.Tensor:
        """:func:`ndsm_sample` with this process."""
        return ndsm_sample(score, self, n, generator=generator, **kw)


def ndsm_loss(
    score: PointScore,
    x0: torch.Tensor,
    proc: NDSM,
    generator: torch.Generator | None = None,
    control_variate: str | PointScore | None = "exact",
    n: torch.Tensor | int | None = None,
    weighting: str = "vp",
    xn: torch.Tensor | None = None,
) -> torch.Tensor:
    """One-step-transition DSM loss per sample, ``(B,)``.

    Parameters
    ----------
    score : point-space model ``(x, t) -> (B, d)``.
    x0 : data ``(B, d)``.
    control_variate : ``None``/``"none"``: plain loss (``O(1/dt)`` variance). ``"exact"``: subtract
        ``2 s(mu_n, t_{n+1}).xi/g + (|xi|² - d)/g²`` (mean zero; ``g = sqrt(beta_n dt)``).
        A callable ``c(mu, t)``: the same with ``c`` in place of ``s`` (a *learned* control
        variate; train ``c`` by minimising the variance, e.g. the square of this loss with
        the score detached). The expected loss differs from the plain one by the constant
        ``d / g²`` only, so gradients are unbiased either way.
    n : step index of ``x_n`` in ``0..steps-1`` (int, ``(B,)``, or None = uniform random).
    weighting : ``"vp"`` multiplies by ``sigma_vp(t_{n+1})²`` (the usual DSM weight), ``"none"``.
    xn : optional precomputed states ``x_n (B, d)`` at the step indices ``n`` (e.g. drawn from a
        bank of :meth:`NDSM.trajectories`); then ``x0`` is only used for its shape and the
        forward simulation is skipped. The one-step noise ``xi`` is always fresh.
    """
    if x0.ndim != 2:
        raise ValueError(f"x0 has shape {tuple(x0.shape)}; expected (B, d)")
    B, d = x0.shape
    if n is None:
        n = torch.randint(proc.steps, (B,), generator=generator)
    elif isinstance(n, int):
        if not 0 <= n < proc.steps:
            raise ValueError(f"n must lie in 0..{proc.steps - 1}; got {n}")
        n = torch.full((B,), n, dtype=torch.long)
    if xn is None:
        xn = proc.states_at(x0, n, generator)
    elif xn.shape != x0.shape or n.shape != (B,):
        raise ValueError(f"xn {tuple(xn.shape)} and n {tuple(n.shape)} must match x0 {tuple(x0.shape)} and ({B},)")
    x1, mu, xi, g = proc.step(xn, n, generator)
    t1 = proc.times[n + 1].to(x0.dtype)
    s = score(x1, t1)
    loss = (s + xi / g).square().sum(1)
    if isinstance(control_variate, str) and control_variate not in ("none", "exact"):
        raise ValueError(f"control_variate must be None, 'none', 'exact' or a callable; got {control_variate!r}")
    if control_variate not in (None, "none"):
        c = score(mu, t1) if control_variate == "exact" else control_variate(mu, t1)
        g2 = g.square()[:, 0]
        loss = loss - 2 * (c * xi).sum(1) / g[:, 0] - (xi.square().sum(1) - d) / g2
    if weighting == "vp":
        loss = loss * proc.sde.std(t1).to(x0.dtype).square()
    elif weighting != "none":
        raise ValueError(f"weighting must be 'vp' or 'none'; got {weighting!r}")
    return loss


@torch.no_grad()
def ndsm_sample(
    score: PointScore,
    proc: NDSM,
    n: int,
    generator: torch.Generator | None = None,
    x_init: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Reverse EM on the training grid, started from ``pi_ref`` (or ``x_init``): ``(n, d)``.

    Step from ``t_k`` to ``t_{k-1}``: ``y += [-½ beta_k grad log pi_ref(y) + beta_k s(y, t_k)] dt
    + sqrt(beta_k dt) xi``.
    """
    y = proc.pi_ref.sample(n, generator, dtype) if x_init is None else x_init.to(dtype).clone()
    for k in range(proc.steps, 0, -1):
        b = float(proc.betas[k])
        t = torch.full((n,), float(proc.times[k]), dtype=dtype)
        y = y + (-0.5 * b * proc.pi_ref.score(y) + b * score(y, t)) * proc.dt
        y = y + math.sqrt(b * proc.dt) * torch.randn(y.shape, generator=generator, dtype=dtype)
    return y


def point_dsm_loss(score: PointScore, x0: torch.Tensor, sde: SDE, generator: torch.Generator | None = None,
                   t_min: float = 1e-3, t: torch.Tensor | None = None) -> torch.Tensor:
    """Standard VP DSM in R^d, ``sigma(t)² |s(x_t, t) + z / sigma(t)|²`` per sample ``(B,)``, ``t ~ U(t_min, T)``."""
    B = x0.shape[0]
    if t is None:
        t = t_min + (sde.T - t_min) * torch.rand(B, generator=generator, dtype=torch.float64)
    z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    m, sd = sde.mean_scale(t).to(x0.dtype)[:, None], sde.std(t).to(x0.dtype)[:, None]
    return (sd * score(m * x0 + sd * z, t.to(x0.dtype)) + z).square().sum(1)


def per_sample_gradients(model: nn.Module, losses: Callable[[PointScore], torch.Tensor]) -> torch.Tensor:
    """Per-sample gradients ``(B, P)`` of ``losses(score) -> (B,)`` w.r.t. ``model``'s parameters.

    ``losses`` receives a score callable bound to the parameters (via ``torch.func``); draw its
    randomness from a generator inside, so one call fixes the noise of every sample.
    """
    from torch.func import functional_call, jacrev

    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def f(p: dict) -> torch.Tensor:
        return losses(lambda x, t: functional_call(model, (p, buffers), (x, t)))

    jac = jacrev(f)(params)
    return torch.cat([j.reshape(j.shape[0], -1) for j in jac.values()], 1)
