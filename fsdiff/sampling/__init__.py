"""Samplers for function-space diffusion: reverse SDE, predictor–corrector, probability-flow ODE.

Plain functions of ``(model, sde, grid, n, ...)`` with the random source passed in. ``model``
keeps the score-model protocol ``model(x_t, t, grid) -> eta_hat``; the conversion to
``Q grad log p_t`` goes through :mod:`fsdiff.parametrization`. Times run from ``T`` down to
``eps > 0`` on a grid from :func:`fsdiff.sampling.time_steps`.

Samplers (``sampler=``)
-----------------------
``"em"``
    Euler–Maruyama on the reverse SDE ``dX = [a X - g² Q grad log p_t] dt + g dW^Q``:
    ``x <- x - h (a x - g² qscore) + sqrt(g² h) xi``, ``xi ~ N(0, Q)`` (coloured, nested),
    coefficients at the step's start. ``steps`` score evaluations.
``"pc"``
    Predictor–corrector (Song et al. 2021): at each ``t_i``, ``corrector_steps`` rounds of
    Q-preconditioned Langevin targeting ``p_{t_i}``, then an EM predictor step.
    ``steps * (1 + corrector_steps)`` evaluations. See *Corrector* below.
``"ode"``
    Probability-flow ODE ``dX = [a X - ½ g² qscore] dt`` with Heun's method (2nd order;
    ``2 * steps`` evaluations, Heun on every step since ``eps > 0``).
``"ode_gauss"``
    Heun on the same ODE written in the Gaussian coordinates of a model with a Gaussian part
    (:class:`~fsdiff.models.SpectralPreconditioner`: data mean ``mu``, data eigenvalues ``c_k``),
    ``y_k = (x - m mu)_k / sqrt(v_k)``, ``v_k = m² c_k + s² lambda_k``. The Gaussian part of the drift
    cancels exactly and ``dy_k/dt = ½ g² e_k / (s sqrt(v_k))``, with ``e = eta_hat - eta_G`` the
    network's residual, so the Gaussian part (every mode above the network's band, and the whole
    model while it is untrained) is transported exactly, whatever the step count. It starts from
    the Gaussian part's marginal at T (``y_T`` standard normal per mode: the prior draw whitened),
    not from ``N(0, s(T)² Q)``, which misses ``m(T)² c_k``. The run ends with
    the exact Gaussian flow from ``eps`` to 0, ``x = mu + irfft(sqrt(c) y)``, instead of the Tweedie
    step (which shrinks noise-dominated modes to their posterior mean). ``2 * steps`` evaluations.
``"ode_adaptive"``
    The same ODE with ``scipy.integrate.solve_ivp`` (RK45, ``rtol``/``atol``) on the whole
    batch as one float64 vector (the step size control couples the samples of a batch, as in
    Song et al.); ``steps`` and ``time_grid`` are unused; the number of evaluations is
    reported in ``info["nfe"]``.

``denoise=True`` (default) ends with one Tweedie step at ``eps``,
``x0_hat = (x - s eta_hat) / m`` (one more evaluation).

Corrector: the Langevin step in function space
----------------------------------------------
Langevin dynamics for ``p_t`` preconditioned by Q, ``dX = Q grad log p_t dt + sqrt(2) dW^Q``,
leaves ``p_t`` invariant and is well defined on L² (its noise is trace class). One step is

    x <- x + e qscore(x) + sqrt(2 e) xi,        xi ~ N(0, Q).

It is ordinary Langevin in the whitened coordinates ``y = Q^{-1/2} x`` (identity
preconditioner, ``grad_y log p = Q^{1/2} grad_x log p``). Song et al.'s signal-to-noise rule
``e = 2 (r ||z|| / ||grad_y log p||)²`` in those coordinates reads, back in x,

    e = 2 (r ||xi||_Q / ||qscore||_Q)²,     ||u||_Q = ||Q^{-1/2} u||_{L²} (Cameron–Martin norm),

computed per sample in Fourier (pseudo-inverse on modes where ``q_k = 0``). Both norms grow
with the number of modes, but their ratio converges: for Gaussian ``p_t`` with eigenvalues
``v_k`` it is the harmonic mean of ``v_k / q_k`` over the kept modes, which tends to ``s(t)²``
once the noise dominates the fine modes, so ``e -> 2 r² s(t)²`` under refinement. The
stability limit of the step is ``e < 2 min_k v_k / q_k``, and the harmonic mean respects the
minimum far better than an L²-norm ratio (dominated by the low, data-dominated modes), which
overshoots on the fine modes. ``r = snr`` (default 0.16, Song et al.'s VP choice; their extra
factor ``alpha_i = 1 - beta_i / N`` is taken as 1).

Randomness, chunking, nesting
-----------------------------
The passed ``generator`` is used for one call that draws an int64 seed per random draw of
the run (prior, and each step's predictor/corrector noise); every draw then uses its own
``torch.Generator`` seeded with its seed and is made for the **whole batch**. Hence

* ``chunk_size`` (evaluating the model on micro-batches) gives bit-identical results to
  unchunked runs, provided the model treats batch items independently in floating point;
* with the same seed, runs on two grids use the same random functions (noise draws are
  nested, :meth:`Covariance.sample`): with an exact (mode-diagonal) oracle, the coarse run is
  the Fourier restriction of the fine one up to rounding;
* :func:`sample_coarse_to_fine` shares those draws with :func:`sample`.
"""

from .memory import chunk_size_for, parse_memory, sampling_bytes
from .samplers import SAMPLER_CHOICES, SAMPLERS, default_sampler, resolve_sampler, sample, sample_coarse_to_fine
from .timesteps import TIME_GRIDS, noise_level, time_steps

__all__ = ["sample", "sample_coarse_to_fine", "SAMPLERS", "SAMPLER_CHOICES", "default_sampler", "resolve_sampler",
           "time_steps", "TIME_GRIDS", "noise_level", "chunk_size_for", "parse_memory", "sampling_bytes"]
